"""/v1 end to end: the real app and client in front of a real ``pnsd`` process."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import encode_basic_auth

from pnsweb import ogc
from pnsweb.app import create_app
from pnsweb.settings import User, hash_password, load_settings
from tests.integration.conftest import DaemonProcess, pnsweb_client
from tests.waiting import until

pytestmark = pytest.mark.slow
CREDENTIALS = ("carol", "pw")
AUTH = {"Authorization": encode_basic_auth(*CREDENTIALS)}
POLL_DEADLINE = 30.0


@pytest.fixture
async def web(aiohttp_client: Any, pnsd: DaemonProcess) -> AsyncIterator[Any]:
    env = {"HOME": str(pnsd.home), "PNS_HOME": str(pnsd.home)}
    settings = load_settings(config=pnsd.config, env=env)
    settings = dataclasses.replace(
        settings, users=(User(CREDENTIALS[0], hash_password(CREDENTIALS[1])),))
    async with pnsweb_client(settings) as client:
        yield await aiohttp_client(create_app(settings, client=client))


async def wait_for_status(web: Any, job_id: str, wanted: str) -> dict[str, Any]:
    """Poll the job's status through the API (the behaviour under test) until ``wanted``."""
    info: dict[str, Any] = {}

    async def reached() -> bool:
        info.update(await (await web.get(f"/v1/jobs/{job_id}", headers=AUTH)).json())
        assert info["status"] in (wanted, "accepted", "running"), info
        return bool(info["status"] == wanted)

    await until(reached, timeout=POLL_DEADLINE, every=0.05)
    return info


async def test_every_demo_pts_is_a_process(web: Any) -> None:
    body = await (await web.get("/v1/processes")).json()
    assert {"echo", "sleep", "hello", "hello-worker", "testcalc"} <= {
        p["id"] for p in body["processes"]}
    sleep = await (await web.get("/v1/processes/sleep")).json()
    assert sleep["inputs"]["seconds"]["schema"]["type"] == "number"


async def test_sync_echo_execution_raw_and_document(web: Any) -> None:
    value = {"any": ["json", 1, None]}
    raw = await web.post("/v1/processes/echo/execution", json={"inputs": {"value": value}},
                         headers=AUTH)
    assert raw.status == 200, await raw.text()
    assert await raw.json() == {"value": value}     # echo declares no inputs: its input map
    doc = await web.post("/v1/processes/echo/execution", headers=AUTH,
                         json={"inputs": {"value": value}, "response": "document"})
    assert await doc.json() == {"result": {"value": value}}


async def test_hello_process_mode_runs_the_real_script(web: Any) -> None:
    response = await web.post("/v1/processes/hello/execution", headers=AUTH,
                              json={"inputs": {"infile": "Ada"}, "response": "document"})
    assert response.status == 200, await response.text()
    assert (await response.json())["outfile"].startswith("hello Ada! From ")


async def test_async_sleep_job_polls_to_success_and_has_results(web: Any) -> None:
    response = await web.post("/v1/processes/sleep/execution", json={"inputs": {"seconds": 0.3}},
                              headers={**AUTH, "Prefer": "respond-async"})
    assert response.status == 201, await response.text()
    job_id = (await response.json())["jobID"]
    assert response.headers["Location"].endswith(f"/v1/jobs/{job_id}")
    info = await wait_for_status(web, job_id, "successful")
    assert info["progress"] == 100
    assert "finished" in info
    results = await web.get(f"/v1/jobs/{job_id}/results", headers=AUTH)
    assert await results.json() == {"slept": 0.3}
    listed = await (await web.get("/v1/jobs?processID=sleep&limit=5", headers=AUTH)).json()
    assert job_id in [job["jobID"] for job in listed["jobs"]]


async def test_a_long_sleep_job_is_dismissed(web: Any) -> None:
    response = await web.post("/v1/processes/sleep/execution", json={"inputs": {"seconds": 60}},
                              headers={**AUTH, "Prefer": "respond-async"})
    job_id = (await response.json())["jobID"]
    await wait_for_status(web, job_id, "running")
    early = await web.get(f"/v1/jobs/{job_id}/results", headers=AUTH)
    assert (await early.json())["type"] == ogc.RESULT_NOT_READY
    dismissed = await web.delete(f"/v1/jobs/{job_id}", headers=AUTH)
    assert dismissed.status == 200
    assert (await dismissed.json())["status"] == "dismissed"
    assert (await web.get(f"/v1/jobs/{job_id}", headers=AUTH)).status == 404   # deleted


async def test_events_stream_until_the_job_ends(web: Any) -> None:
    response = await web.post("/v1/processes/sleep/execution", json={"inputs": {"seconds": 0.5}},
                              headers={**AUTH, "Prefer": "respond-async"})
    job_id = (await response.json())["jobID"]
    async with asyncio.timeout(POLL_DEADLINE):
        text = await (await web.get(f"/v1/jobs/{job_id}/events", headers=AUTH)).text()
    data = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert data, text
    assert data[-1]["kind"] == "status"
    assert data[-1]["status"] == "successful"
    assert any(event["kind"] == "progress" for event in data)


async def test_unknown_process_and_job_are_ogc_404s(web: Any) -> None:
    process = await web.get("/v1/processes/nope")
    assert (await process.json())["type"] == ogc.NO_SUCH_PROCESS
    job = await web.get("/v1/jobs/0123456789abcdef0123456789abcdef", headers=AUTH)
    assert job.status == 404
    assert (await job.json())["type"] == ogc.NO_SUCH_JOB


async def test_a_client_that_disconnects_mid_request_leaves_the_job_to_complete(
        web: Any, pnsd: DaemonProcess) -> None:
    url = web.make_url("/v1/processes/sleep/execution")
    body = json.dumps({"inputs": {"seconds": 0.5}}).encode()
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        f"POST {url.path} HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
        f"Authorization: {AUTH['Authorization']}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body)
    await writer.drain()
    with pnsd.client() as daemon:      # the run has reached the daemon: then hang up
        def running() -> int:
            return int(daemon.call("status", {})["pts"]["sleep"]["running"])

        def recorded() -> list[dict[str, Any]]:
            return list(daemon.call("job.list", {"pts": "sleep"})["jobs"])

        await until(lambda: running() > 0, timeout=POLL_DEADLINE, every=0.02)
        writer.close()
        await writer.wait_closed()
        # the run goes on to its end; its record is group-committed: it appears shortly
        await until(lambda: not running(), timeout=POLL_DEADLINE, every=0.02)
        await until(lambda: bool(recorded()), timeout=POLL_DEADLINE, every=0.02)
        jobs = recorded()
        assert jobs[0]["status"] == "successful"
    assert (await web.get("/v1/processes")).status == 200   # and the front-end carries on
    del reader


async def test_an_input_of_the_wrong_type_is_400_and_reaches_no_pts(web: Any) -> None:
    before = (await (await web.get("/v1/jobs?processID=sleep", headers=AUTH)).json())[
        "numberMatched"]
    for prefer in ({}, {"Prefer": "respond-async"}):
        resp = await web.post("/v1/processes/sleep/execution",
                              json={"inputs": {"seconds": "abc"}}, headers={**AUTH, **prefer})
        assert resp.status == 400, await resp.text()
        problem = await resp.json()
        assert problem["errors"][0] == {
            "input": "seconds", "pointer": "/inputs/seconds", "rule": "type",
            "message": "'abc' is not of type 'number'"}
    after = (await (await web.get("/v1/jobs?processID=sleep", headers=AUTH)).json())[
        "numberMatched"]
    assert after == before
    ok = await web.post("/v1/processes/sleep/execution", json={"inputs": {"seconds": 0}},
                        headers=AUTH)
    assert ok.status == 200, await ok.text()


async def test_a_pnsweb_with_another_key_answers_502_at_once_and_the_daemon_counts_it(
        aiohttp_client: Any, pnsd: DaemonProcess) -> None:
    env = {"HOME": str(pnsd.home), "PNS_HOME": str(pnsd.home)}
    settings = load_settings(config=pnsd.config, env=env)
    settings = dataclasses.replace(
        settings, key=b"0" * 64, users=(User(CREDENTIALS[0], hash_password(CREDENTIALS[1])),))
    async with pnsweb_client(settings) as client:
        web = await aiohttp_client(create_app(settings, client=client))
        loop = asyncio.get_running_loop()
        started = loop.time()
        response = await web.get("/v1/processes", headers=AUTH)
        assert response.status == 502 and loop.time() - started < 20   # not the 60 s timeout
        assert "signature" in (await response.json())["detail"]
    with pnsd.client() as daemon:
        assert daemon.call("status", {})["refusals"]["refused"]["auth"] >= 1
