"""/v0.6 routes for the listing, scripts, exchange dirs, hooks, demo reset and echo."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from pnsweb.app import create_app
from pnsweb.routes_v06 import ROUTES
from protocols.errors import ErrorCode, RemoteError
from tests.pnsweb.fakes import USER, Call, FakeDaemon, basic, demo_daemon, outcome, web_settings

AUTH = basic(USER)


@pytest.fixture
def daemon() -> FakeDaemon:
    return demo_daemon()


@pytest.fixture
async def client(aiohttp_client: Any, daemon: FakeDaemon) -> Any:
    return await aiohttp_client(create_app(web_settings(), client=daemon))


# -- the listing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v0.6/", "/v0.6/api", "/v0.6"])
async def test_listing_names_every_route_with_absolute_urls(client: Any, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 200
    body = await resp.json()
    assert list(body["APIs"]) == ["DELETE", "GET", "POST", "PUT"]
    base = f"http://{client.host}:{client.port}/v0.6"
    listed = {(m, item["URL"]) for m, items in body["APIs"].items() for item in items}
    assert listed == {(r.method, base + r.path) for r in ROUTES}
    assert isinstance(body["timestamp"], float)


async def test_listing_keeps_the_reference_descriptions(client: Any) -> None:
    body = await (await client.get("/v0.6/")).json()
    get = {item["URL"].rsplit("/", 1)[1]: item["description"] for item in body["APIs"]["GET"]}
    assert get["init"] == "the initPTS file"
    assert get["input"].startswith(" returns names and contents of all files in the dir")
    delete = body["APIs"]["DELETE"][0]["description"]
    assert delete == " Removing traces of past runnings the Processing Task Software.\n    "


async def test_listing_urls_follow_the_host_asked_for(client: Any) -> None:
    body = await (await client.get("/v0.6/", headers={"Host": "pns.example:8080"})).json()
    assert body["APIs"]["POST"][0]["URL"].startswith("http://pns.example:8080/v0.6/")


async def test_listing_is_made_per_host_and_stamped_per_request(client: Any) -> None:
    bodies = [await (await client.get("/v0.6/", headers={"Host": host})).json()
              for host in ("a.example", "b.example", "a.example")]
    urls = [body["APIs"]["GET"][0]["URL"] for body in bodies]
    assert urls == ["http://a.example/v0.6/init", "http://b.example/v0.6/init",
                    "http://a.example/v0.6/init"]
    stamps = [body["timestamp"] for body in bodies]
    assert stamps == sorted(set(stamps))


# -- scripts and exchange dirs ---------------------------------------------------------------------

@pytest.mark.parametrize("hook", ["init", "config", "run", "clean"])
async def test_get_script_returns_its_text(client: Any, daemon: FakeDaemon, hook: str) -> None:
    resp = await client.get(f"/v0.6/{hook}")
    assert resp.status == 200
    body = await resp.json()
    assert body["result"] == f"#!/bin/sh\n# {hook}PTS\n"
    assert set(body) == {"result", "message", "timestamp"}
    assert daemon.calls[-1].op == "pts.script"
    assert daemon.calls[-1].body == {"name": "hello", "hook": hook}


async def test_unknown_pts_is_404(client: Any, daemon: FakeDaemon) -> None:
    daemon.fail("pts.script", ErrorCode.NOT_FOUND, "no PTS named hello")
    resp = await client.get("/v0.6/init")
    assert resp.status == 404
    assert (await resp.json())["error"] == "Not found."


@pytest.mark.parametrize("which", ["input", "output"])
async def test_get_files_returns_names_and_contents(
    client: Any, daemon: FakeDaemon, which: str
) -> None:
    body = await (await client.get(f"/v0.6/{which}")).json()
    assert body["result"] == {"infile": "stranger"}
    assert daemon.calls[-1].body == {"name": "hello", "which": which}


async def test_get_files_of_a_missing_dir_is_null_with_a_message(
    client: Any, daemon: FakeDaemon
) -> None:
    daemon.reply("pts.files", {"files": None})
    resp = await client.get("/v0.6/output")
    body = await resp.json()
    assert resp.status == 200 and body["result"] is None
    assert "does not exist" in body["message"]


async def test_binary_file_contents_stay_json(client: Any, daemon: FakeDaemon) -> None:
    daemon.reply("pts.files", {"files": {"text": b"hi", "blob": b"\xff\x00"}})
    body = await (await client.get("/v0.6/output")).json()
    assert body["result"] == {"text": "hi", "blob": {"base64": "/wA="}}


# -- hooks -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "hook"),
                         [("PUT", "/init", "init"), ("PUT", "/config", "config"),
                          ("DELETE", "/clean", "clean")])
async def test_hook_answers_return_code_and_outcome(
    client: Any, daemon: FakeDaemon, method: str, path: str, hook: str
) -> None:
    resp = await client.request(method, "/v0.6" + path, headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert body["result"] == 0
    assert body["message"] == {"command": f"['/home/pns/{hook}PTS']", "returncode": 0,
                               "stdout": "The initialization script at /home/pns\n",
                               "stderr": ""}
    assert daemon.calls[-1].op == "pts.hook"
    assert daemon.calls[-1].body == {"name": "hello", "hook": hook, "lock": "hello"}


async def test_hook_honours_a_timeout(client: Any, daemon: FakeDaemon) -> None:
    await client.put("/v0.6/init", json={"timeout": 3}, headers=AUTH)
    call = daemon.calls[-1]
    assert call.body["timeout"] == 3.0
    assert call.timeout is not None and 3.0 < call.timeout <= 30.0


@pytest.mark.parametrize("body", [{"timeout": "3"}, {"timeout": -1}, {"timeout": True}, [1]])
async def test_hook_refuses_a_bad_body(client: Any, daemon: FakeDaemon, body: Any) -> None:
    resp = await client.put("/v0.6/init", json=body, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["error"] == "Bad request."
    assert daemon.calls == []


async def test_hook_without_a_script_is_a_no_op(client: Any, daemon: FakeDaemon) -> None:
    daemon.reply("pts.hook", {"result": None})
    body = await (await client.put("/v0.6/config", headers=AUTH)).json()
    assert body["result"] == 0 and "nothing to do" in body["message"]


async def test_failing_hook_is_502_with_return_code_and_outcome(
    client: Any, daemon: FakeDaemon
) -> None:
    details = outcome("initPTS", returncode=3)
    daemon.fail("pts.hook", ErrorCode.PTS_ERROR, "init command exited with code 3", details)
    resp = await client.put("/v0.6/init", headers=AUTH)
    assert resp.status == 502
    body = await resp.json()
    assert body["result"] == 3
    assert body["message"]["returncode"] == 3 and "command" in body["message"]
    assert body["error"] and body["timestamp"]


async def test_second_locked_operation_is_409(client: Any, daemon: FakeDaemon) -> None:
    release, running = asyncio.Event(), asyncio.Event()

    async def hook(body: Any) -> Any:
        if running.is_set():
            raise RemoteError(ErrorCode.BUSY, "hello is busy")
        running.set()
        await release.wait()
        return {"result": outcome("initPTS")}

    daemon.on("pts.hook", hook)
    first = asyncio.ensure_future(client.put("/v0.6/init", headers=AUTH))
    await asyncio.wait_for(running.wait(), 5)
    second = await client.delete("/v0.6/clean", headers=AUTH)
    assert second.status == 409
    assert (await second.json())["error"] == "Conflict. Updating."
    release.set()
    assert (await first).status == 200


# -- demo reset and echo ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v0.6/testinit", "/v0.6/inittest"])
async def test_testinit_answers_result_0_and_an_empty_message_like_every_put(
    client: Any, daemon: FakeDaemon, path: str
) -> None:
    resp = await client.put(path, headers=AUTH)
    assert resp.status == 200
    body = await resp.json()
    assert (body["result"], body["message"]) == (0, "")    # what the reference's clients check
    assert daemon.calls[-1] == Call("demo.reset", {"lock": "hello"}, daemon.calls[-1].timeout)


@pytest.mark.parametrize("value", [{"a": [1, 2, {"b": None}]}, [1, "x"], "text", 3.5, True, None])
async def test_echo_returns_the_body_unchanged(client: Any, value: Any) -> None:
    resp = await client.post("/v0.6/echo", data=json.dumps(value))
    assert resp.status == 200
    assert (await resp.json())["result"] == value


async def test_echo_of_an_empty_body_is_null(client: Any) -> None:
    body = await (await client.post("/v0.6/echo")).json()
    assert body["result"] is None


async def test_echo_keeps_a_tagged_body_as_it_is(client: Any) -> None:
    tagged = {"data": {"x": 1}, "_STID": "ODict"}
    assert (await (await client.post("/v0.6/echo", json=tagged)).json())["result"] == tagged


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2", b"NaN", b"\xff\xfe", b"{'a': 1}"])
async def test_invalid_json_is_400_never_echoed(client: Any, raw: bytes) -> None:
    resp = await client.post("/v0.6/echo", data=raw,
                             headers={"Content-Type": "application/json"})
    assert resp.status == 400
    body = await resp.json()
    assert body["error"] == "Bad request." and "result" not in body
    assert "not valid JSON" in body["message"]
