"""/v0.6 routes that run a PTS: /run, /testrun, /testcalc, /calc, /sleep (plain and tagged)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pnsweb.app import create_app
from protocols.errors import ErrorCode
from tests.pnsweb.fakes import USER, FakeDaemon, basic, demo_daemon, outcome, web_settings

AUTH = basic(USER)
DATA = Path(__file__).parent / "data"
CALC_BODY = {"creator": "me", "rootcause": "test",
             "input": {"meta": {"speed": {"value": 3}, "other": 1}, "data1": [1, 2], "d2": 7}}


def _load(name: str) -> Any:
    return json.loads((DATA / f"fdi-{name}.json").read_text())


def _without_tai(product: dict[str, Any]) -> dict[str, Any]:
    product = copy.deepcopy(product)
    product["meta"]["_sets"]["data"]["creationDate"]["value"].pop("tai")
    return product


@pytest.fixture
def daemon() -> FakeDaemon:
    return demo_daemon()


@pytest.fixture
async def client(aiohttp_client: Any, daemon: FakeDaemon) -> Any:
    return await aiohttp_client(create_app(web_settings(), client=daemon))


# -- /testrun --------------------------------------------------------------------------------------

async def test_testrun_plain_answers_creator_rootcause_and_the_answer(
    client: Any, daemon: FakeDaemon
) -> None:
    body = {"creator": "me", "rootcause": "because", "input": {"theName": "world"}}
    resp = await client.post("/v0.6/testrun", json=body, headers=AUTH)
    assert resp.status == 200
    reply = await resp.json()
    assert reply["result"]["creator"] == "me" and reply["result"]["rootcause"] == "because"
    assert reply["result"]["theAnswer"].startswith("hello world!")
    assert reply["message"]["returncode"] == 0 and reply["message"]["command"]
    assert daemon.calls[-1].body == {"pts": "hello", "input": {"infile": "world"},
                                     "lock": "hello"}


async def test_testrun_honours_the_body_timeout(client: Any, daemon: FakeDaemon) -> None:
    body = {"creator": "me", "rootcause": "r", "input": {}, "timeout": 2}
    assert (await client.post("/v0.6/testrun", json=body, headers=AUTH)).status == 200
    call = daemon.calls[-1]
    assert call.body["timeout"] == 2.0 and call.body["input"] == {"infile": "stranger"}


async def test_testrun_tagged_answers_in_the_tagged_form(
    client: Any, daemon: FakeDaemon
) -> None:
    resp = await client.post("/v0.6/testrun", json=_load("testrun-request"), headers=AUTH)
    assert resp.status == 200
    reply = await resp.json()
    sample = _load("testrun-response")
    answer = reply["result"]["_sets"]["data"]["theAnswer"]["data"]
    assert answer.startswith("hello stranger!")
    expected = copy.deepcopy(sample["result"])
    expected["_sets"]["data"]["theAnswer"]["data"] = answer
    assert _without_tai(reply["result"]) == _without_tai(expected)
    assert set(reply["message"]) == {"command", "stdout", "stderr", "returncode"}
    assert daemon.calls[-1].body["input"] == {"infile": "stranger"}


@pytest.mark.parametrize("body", [
    {"rootcause": "r", "input": {}},
    {"creator": 1, "rootcause": "r"},
    {"creator": "c", "rootcause": "r", "input": []},
    {"creator": "c", "rootcause": "r", "input": {"theName": 5}},
    {"creator": "c", "rootcause": "r", "timeout": 0},
    [1, 2],
    {"_STID": "ODict", "data": {"creator": "c"}},
])
async def test_testrun_refuses_bad_bodies(client: Any, daemon: FakeDaemon, body: Any) -> None:
    resp = await client.post("/v0.6/testrun", json=body, headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["error"] == "Bad request."
    assert daemon.calls == []


async def test_a_failing_run_is_502_with_the_return_code(client: Any, daemon: FakeDaemon) -> None:
    details = outcome("runPTS", returncode=1) | {"stderr": "no such name"}
    daemon.fail("run", ErrorCode.PTS_ERROR, "run command exited with code 1", details)
    resp = await client.post("/v0.6/testrun", json={"creator": "c", "rootcause": "r"},
                             headers=AUTH)
    assert resp.status == 502
    body = await resp.json()
    assert body["result"] == 1 and body["message"]["stderr"] == "no such name"


async def test_busy_run_is_409(client: Any, daemon: FakeDaemon) -> None:
    daemon.fail("run", ErrorCode.BUSY, "hello is busy")
    resp = await client.post("/v0.6/testrun", json={"creator": "c", "rootcause": "r"},
                             headers=AUTH)
    assert resp.status == 409


# -- /testcalc and /calc ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v0.6/testcalc", "/v0.6/calc"])
async def test_testcalc_plain(client: Any, daemon: FakeDaemon, path: str) -> None:
    resp = await client.post(path, json=CALC_BODY, headers=AUTH)
    assert resp.status == 200
    result = (await resp.json())["result"]
    assert result["creator"] == "me" and result["rootcause"] == "test"
    assert result["meta"] == {"speed": {"value": 3}}
    assert list(result["datasets"]) == ["data1", "spectrum"]
    assert daemon.calls[-1].body == {"pts": "testcalc", "input": CALC_BODY}


async def test_testcalc_tagged_answers_like_the_reference(client: Any) -> None:
    resp = await client.post("/v0.6/testcalc", json=_load("testcalc-request"), headers=AUTH)
    assert resp.status == 200
    reply = await resp.json()
    sample = _load("testcalc-response")
    assert _without_tai(reply["result"]) == _without_tai(sample["result"])
    assert reply["message"] == ""


@pytest.mark.parametrize("change", [
    lambda b: b["input"].pop("meta"),
    lambda b: b["input"].update(meta={}),
    lambda b: b.update(input={"meta": {"a": 1}}),
    lambda b: b.pop("creator"),
])
async def test_testcalc_refuses_bad_bodies(client: Any, daemon: FakeDaemon, change: Any) -> None:
    body = copy.deepcopy(CALC_BODY)
    change(body)
    resp = await client.post("/v0.6/testcalc", json=body, headers=AUTH)
    assert resp.status == 400
    assert daemon.calls == []


# -- /run ------------------------------------------------------------------------------------------

async def test_run_delivers_input_and_returns_outputs(client: Any, daemon: FakeDaemon) -> None:
    body = {"input": {"infile": "Ada"}, "timeout": 5}
    resp = await client.post("/v0.6/run", json=body, headers=AUTH)
    assert resp.status == 200
    reply = await resp.json()
    assert reply["result"]["outfile"].startswith("hello Ada!")
    assert reply["message"]["returncode"] == 0
    assert daemon.calls[-1].body == {"pts": "hello", "input": {"infile": "Ada"}, "timeout": 5.0,
                                     "lock": "hello"}


@pytest.mark.parametrize("body", [{}, {"input": "x"}, {"input": {"infile": 3}}, None])
async def test_run_refuses_bad_input(client: Any, daemon: FakeDaemon, body: Any) -> None:
    resp = await client.post("/v0.6/run", json=body, headers=AUTH)
    assert resp.status == 400
    assert daemon.calls == []


async def test_run_of_an_unknown_default_pts_is_404(
    aiohttp_client: Any, daemon: FakeDaemon
) -> None:
    client = await aiohttp_client(create_app(web_settings(default_pts="gone"), client=daemon))
    resp = await client.post("/v0.6/run", json={"input": {}}, headers=AUTH)
    assert resp.status == 404


# -- /sleep ----------------------------------------------------------------------------------------

async def test_sleep_runs_the_sleep_pts(client: Any, daemon: FakeDaemon) -> None:
    resp = await client.post("/v0.6/sleep/2.5", headers=AUTH)
    assert resp.status == 200
    reply = await resp.json()
    assert reply["result"] == 0 and reply["message"]["stdout"] == "slept 2.5\n"
    assert daemon.calls[-1].body == {"pts": "sleep-process", "input": {"seconds": "2.5"},
                                     "lock": "hello"}    # the default PTS's: the one lock


async def test_sleep_killed_at_its_timeout_is_504_with_a_negative_code(
    client: Any, daemon: FakeDaemon
) -> None:
    details = outcome("sleepPTS", returncode=-9)
    daemon.fail("run", ErrorCode.TIMEOUT, "run exceeded 1.0 s", details)
    resp = await client.post("/v0.6/sleep/30", json={"timeout": 1}, headers=AUTH)
    assert resp.status == 504
    body = await resp.json()
    assert body["result"] == -9 and body["message"]["returncode"] == -9
    assert daemon.calls[-1].body["timeout"] == 1.0


@pytest.mark.parametrize("secs", ["abc", "-1", "1e3", "nan", "1.2.3"])
async def test_sleep_refuses_a_bad_duration(client: Any, daemon: FakeDaemon, secs: str) -> None:
    resp = await client.post(f"/v0.6/sleep/{secs}", headers=AUTH)
    assert resp.status == 400
    assert daemon.calls == []
