"""/v1 deploy, replace and undeploy (Part 2 shape): admin only, daemon errors as HTTP statuses."""

from __future__ import annotations

from typing import Any

import pytest

from pnsweb.app import create_app
from pnsweb.openapi import document
from tests.pnsweb.fakes import ADMIN, USER, Call, FakeDaemon, basic, web_settings

SPEC = {"mode": "worker", "entry": "tool:run", "version": "2"}


def swap_reply(body: Any) -> Any:
    return {"name": body["name"], "action": "x", "old_version": "1", "new_version": "2",
            "generation": 7}


@pytest.fixture
def daemon() -> FakeDaemon:
    return (FakeDaemon().on("pts.deploy", swap_reply).on("pts.replace", swap_reply)
            .on("pts.undeploy", swap_reply))


@pytest.fixture
async def client(aiohttp_client: Any, daemon: FakeDaemon) -> Any:
    return await aiohttp_client(create_app(web_settings(), client=daemon))


async def test_deploy_answers_201_with_location_and_passes_the_admin_as_who(
    client: Any, daemon: FakeDaemon,
) -> None:
    response = await client.post("/v1/processes", json={"name": "tool", "spec": SPEC},
                                 headers=basic(ADMIN))
    assert response.status == 201, await response.text()
    assert response.headers["Location"].endswith("/v1/processes/tool")
    body = await response.json()
    assert (body["id"], body["version"]) == ("tool", "2")
    assert daemon.calls == [Call("pts.deploy", {"name": "tool", "spec": SPEC, "who": ADMIN[0]},
                                 300.0)]


async def test_replace_and_undeploy_answer_204(client: Any, daemon: FakeDaemon) -> None:
    put = await client.put("/v1/processes/tool", json={"spec": SPEC}, headers=basic(ADMIN))
    assert put.status == 204
    delete = await client.delete("/v1/processes/tool", headers=basic(ADMIN))
    assert delete.status == 204
    assert [(c.op, c.body["name"], c.body["who"]) for c in daemon.calls] == [
        ("pts.replace", "tool", ADMIN[0]), ("pts.undeploy", "tool", ADMIN[0])]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/processes"), ("PUT", "/v1/processes/tool"), ("DELETE", "/v1/processes/tool")])
async def test_changes_need_an_administrator(
    client: Any, daemon: FakeDaemon, method: str, path: str,
) -> None:
    anonymous = await client.request(method, path, json={"name": "tool", "spec": SPEC})
    assert anonymous.status == 401
    ordinary = await client.request(method, path, json={"name": "tool", "spec": SPEC},
                                    headers=basic(USER))
    assert ordinary.status == 403
    assert daemon.calls == []


@pytest.mark.parametrize(("code", "status"), [
    ("conflict", 409), ("bad_request", 400), ("timeout", 504), ("pts_error", 502)])
async def test_daemon_errors_map_to_statuses_with_the_daemons_message(
    client: Any, daemon: FakeDaemon, code: str, status: int,
) -> None:
    daemon.fail("pts.replace", code, "PTS tool version 2 failed its init: boom; stderr: x")
    response = await client.put("/v1/processes/tool", json={"spec": SPEC}, headers=basic(ADMIN))
    assert response.status == status
    problem = await response.json()
    assert "failed its init: boom" in problem["detail"]


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_an_unknown_process_is_no_such_process(
    client: Any, daemon: FakeDaemon, method: str,
) -> None:
    daemon.fail("pts.replace", "not_found", "no PTS named 'tool'")
    daemon.fail("pts.undeploy", "not_found", "no PTS named 'tool'")
    response = await client.request(method, "/v1/processes/tool", json={"spec": SPEC},
                                    headers=basic(ADMIN))
    assert response.status == 404
    assert (await response.json())["type"].endswith("no-such-process")


@pytest.mark.parametrize(("path", "body", "words"), [
    ("/v1/processes", {"spec": SPEC}, "'name' must be"),
    ("/v1/processes", {"name": "../etc", "spec": SPEC}, "'name' must be"),
    ("/v1/processes", {"name": "tool", "spec": "mode = 1"}, "'spec' must be an object"),
    ("/v1/processes/tool", {"name": "other", "spec": SPEC}, "the body names 'other'"),
    ("/v1/processes/tool", [1], "JSON object"),
])
async def test_malformed_bodies_are_400_without_asking_the_daemon(
    client: Any, daemon: FakeDaemon, path: str, body: Any, words: str,
) -> None:
    method = "POST" if path == "/v1/processes" else "PUT"
    response = await client.request(method, path, json=body, headers=basic(ADMIN))
    assert response.status == 400
    assert words in (await response.json())["detail"]
    assert daemon.calls == []


def test_the_openapi_document_describes_the_part_2_operations() -> None:
    paths = document(create_app(web_settings(), client=FakeDaemon()))["paths"]
    assert "Deploy" in paths["/v1/processes"]["post"]["summary"]
    assert set(paths["/v1/processes/{processId}"]) >= {"get", "put", "delete"}
    assert paths["/v1/processes/{processId}"]["put"]["security"] == [{"basicAuth": []}]
