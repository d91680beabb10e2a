"""/v1 jobs end to end, across both hops (pnsweb -> pnsd): owners, idempotency keys, the queue
bound, deletion and what a restart keeps, with a real ``pnsd`` process behind the real app."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import encode_basic_auth

from pnsweb import ogc
from pnsweb.app import create_app
from pnsweb.settings import User, hash_password, load_settings
from tests.integration.conftest import DaemonProcess, pnsweb_client, spawn_daemon
from tests.waiting import until

pytestmark = pytest.mark.slow
DEADLINE = 30.0
ANN = {"Authorization": encode_basic_auth("ann", "pw-a")}
BOB = {"Authorization": encode_basic_auth("bob", "pw-b")}
ROOT = {"Authorization": encode_basic_auth("root", "pw-r")}
USERS = (User("ann", hash_password("pw-a")), User("bob", hash_password("pw-b")),
         User("root", hash_password("pw-r"), admin=True))
# nap: one slot and a queue of two, so that a burst meets the bound after three submissions
NAP = '[pts.nap]\nmode = "inproc"\nentry = "pnsd.demo:sleep"\nconcurrency = 1\nqueue = 2\n'
ASYNC = {"Prefer": "respond-async"}
ANSWER = 3.0     # seconds an asynchronous submission may take to be answered


def start(home: Path) -> DaemonProcess:
    return spawn_daemon(home, f'endpoint = "ipc://{home.parent}/d.sock"\n{NAP}')


@pytest.fixture
def node(tmp_path: Path) -> Iterator[list[DaemonProcess]]:
    """The daemon (a list: a test may restart it; the last one is stopped at the end)."""
    started = [start(tmp_path / "home")]
    try:
        yield started
    finally:
        for daemon in started:
            if daemon.process.poll() is None:
                daemon.terminate(timeout=60)


@pytest.fixture
async def web(aiohttp_client: Any, node: list[DaemonProcess]) -> AsyncIterator[Any]:
    pnsd = node[0]
    env = {"HOME": str(pnsd.home), "PNS_HOME": str(pnsd.home)}
    settings = dataclasses.replace(load_settings(config=pnsd.config, env=env), users=USERS)
    async with pnsweb_client(settings) as client:
        yield await aiohttp_client(create_app(settings, client=client))


async def submit(web: Any, pts: str, inputs: dict[str, Any], auth: dict[str, str],
                 **headers: str) -> Any:
    return await web.post(f"/v1/processes/{pts}/execution", json={"inputs": inputs},
                          headers={**auth, **ASYNC, **headers})


async def finished(web: Any, job_id: str, auth: dict[str, str]) -> dict[str, Any]:
    info: dict[str, Any] = {}

    async def done() -> bool:
        info.update(await (await web.get(f"/v1/jobs/{job_id}", headers=auth)).json())
        return info["status"] not in ("accepted", "running")

    await until(done, timeout=DEADLINE, every=0.05)
    return info


def stored(pnsd: DaemonProcess, **filters: Any) -> list[dict[str, Any]]:
    with pnsd.client() as client:
        return list(client.call("job.list", {"limit": 1000, **filters})["jobs"])


async def test_users_reach_only_their_own_jobs_admins_all_anonymous_none(web: Any) -> None:
    reply = await submit(web, "echo", {"value": "ann's secret"}, ANN)
    assert reply.status == 201, await reply.text()
    job_id = (await reply.json())["jobID"]
    assert (await finished(web, job_id, ANN))["status"] == "successful"
    for method, suffix in (("GET", ""), ("GET", "/results"), ("GET", "/events"),
                           ("DELETE", "")):
        theirs = await web.request(method, f"/v1/jobs/{job_id}{suffix}", headers=BOB)
        assert theirs.status == 404, (method, suffix)
        assert (await theirs.json())["type"] == ogc.NO_SUCH_JOB
        assert "secret" not in await theirs.text()
        anonymous = await web.request(method, f"/v1/jobs/{job_id}{suffix}")
        assert anonymous.status == 401, (method, suffix)
    assert (await web.get("/v1/jobs")).status == 401
    bobs = await (await web.get("/v1/jobs", headers=BOB)).json()
    assert bobs["jobs"] == [] and bobs["numberMatched"] == 0
    anns = await (await web.get("/v1/jobs", headers=ANN)).json()
    assert [job["jobID"] for job in anns["jobs"]] == [job_id]
    admins = await (await web.get("/v1/jobs", headers=ROOT)).json()
    assert job_id in [job["jobID"] for job in admins["jobs"]]
    results = await web.get(f"/v1/jobs/{job_id}/results", headers=ROOT)
    assert await results.json() == {"result": {"value": "ann's secret"}}
    assert (await web.get("/v1/processes")).status == 200       # descriptions stay public


async def test_a_repeated_idempotency_key_returns_the_same_job_and_runs_once(
        web: Any, node: list[DaemonProcess]) -> None:
    first = await submit(web, "echo", {"value": 1}, ANN, **{"Idempotency-Key": "k-1"})
    again = await submit(web, "echo", {"value": 1}, ANN, **{"Idempotency-Key": "k-1"})
    assert (first.status, again.status) == (201, 201)
    job_id = (await first.json())["jobID"]
    assert (await again.json())["jobID"] == job_id
    await finished(web, job_id, ANN)
    late = await submit(web, "echo", {"value": 1}, ANN, **{"Idempotency-Key": "k-1"})
    assert (await late.json())["jobID"] == job_id
    bobs = await submit(web, "echo", {"value": 1}, BOB, **{"Idempotency-Key": "k-1"})
    assert (await bobs.json())["jobID"] != job_id                # keys are per user
    assert [job["id"] for job in stored(node[0], owner="ann")] == [job_id]


async def test_a_burst_beyond_the_queue_is_answered_at_once_with_201_or_429(
        web: Any, node: list[DaemonProcess]) -> None:
    async def one() -> Any:
        async with asyncio.timeout(ANSWER):      # an answer must not wait for a slot
            return await submit(web, "nap", {"seconds": 60}, ANN)

    replies = await asyncio.gather(*(one() for _ in range(12)))
    statuses = sorted(reply.status for reply in replies)
    assert statuses == [201] * 3 + [429] * 9, statuses     # one slot and a queue of two
    for reply in replies:
        if reply.status == 429:
            assert reply.headers["Retry-After"] == "1"
            assert (await reply.json())["code"] == "busy"
    accepted = [(await reply.json())["jobID"] for reply in replies if reply.status == 201]
    assert sorted(job["id"] for job in stored(node[0], pts="nap")) == sorted(accepted)
    for job_id in accepted:          # deleting cancels them (their running is tested below)
        assert (await web.delete(f"/v1/jobs/{job_id}", headers=ANN)).status == 200
    assert stored(node[0], pts="nap") == []


async def test_a_deleted_job_is_gone_everywhere_also_after_a_restart(
        web: Any, node: list[DaemonProcess], tmp_path: Path) -> None:
    reply = await submit(web, "echo", {"value": "x" * 200_000}, ANN)   # results on disk
    job_id = (await reply.json())["jobID"]
    await finished(web, job_id, ANN)
    assert (node[0].home / "jobs" / job_id).exists()
    deleted = await web.delete(f"/v1/jobs/{job_id}", headers=ANN)
    assert deleted.status == 200 and (await deleted.json())["status"] == "dismissed"
    for suffix in ("", "/results", "/events"):
        assert (await web.get(f"/v1/jobs/{job_id}{suffix}", headers=ANN)).status == 404
    assert (await web.delete(f"/v1/jobs/{job_id}", headers=ANN)).status == 404
    result = node[0].cli("jobs", "result", job_id)
    assert result.returncode != 0 and "not_found" in result.stderr + result.stdout
    assert not any(job_id in str(path) for path in node[0].home.rglob("*"))
    assert node[0].terminate() == 0
    node.append(start(tmp_path / "home"))
    assert (await web.get(f"/v1/jobs/{job_id}", headers=ANN)).status == 404
    result = node[-1].cli("jobs", "result", job_id)
    assert result.returncode != 0


async def test_deleting_a_running_job_cancels_it_and_removes_it(
        web: Any, node: list[DaemonProcess]) -> None:
    reply = await submit(web, "sleep", {"seconds": 60}, ANN)
    job_id = (await reply.json())["jobID"]

    async def running() -> bool:
        info = await (await web.get(f"/v1/jobs/{job_id}", headers=ANN)).json()
        return bool(info["status"] == "running")

    await until(running, timeout=DEADLINE, every=0.05)
    deleted = await web.delete(f"/v1/jobs/{job_id}", headers=ANN)
    assert deleted.status == 200 and (await deleted.json())["status"] == "dismissed"
    assert (await web.get(f"/v1/jobs/{job_id}", headers=ANN)).status == 404
    assert stored(node[0], pts="sleep") == []


async def test_a_job_still_queued_at_shutdown_runs_after_the_restart(
        web: Any, node: list[DaemonProcess], tmp_path: Path) -> None:
    first = await submit(web, "nap", {"seconds": 5}, ANN)
    first_id = (await first.json())["jobID"]

    async def running() -> bool:
        info = await (await web.get(f"/v1/jobs/{first_id}", headers=ANN)).json()
        return bool(info["status"] == "running")

    await until(running, timeout=DEADLINE, every=0.05)
    async with asyncio.timeout(ANSWER):          # answered while the slot is taken
        queued = await submit(web, "nap", {"seconds": 0}, ANN)
    queued_id = (await queued.json())["jobID"]
    assert (await queued.json())["status"] == "accepted"
    assert node[0].terminate() == 0              # the slot is still taken: it never started
    node.append(start(tmp_path / "home"))
    info = await finished(web, queued_id, ANN)
    assert info["status"] == "successful", info
    results = await web.get(f"/v1/jobs/{queued_id}/results", headers=ANN)
    assert await results.json() == {"result": {"slept": 0}}    # nap declares no outputs
