"""Two real pnsd nodes on one PostgreSQL job store: one is SIGKILLed in the middle of jobs, and
every job it had acknowledged ends in a known state with the right result, read through the
node that survived."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protocols.client import Client
from tests.integration.conftest import DaemonProcess, spawn_daemon

pytestmark = pytest.mark.slow

LEASE_TTL = 2.0
SETTLE_TIMEOUT = 90.0
NODE_CONFIG = """store = {url!r}
node = {node!r}
lease_ttl = {ttl}

[pts.isleep]
mode = "inproc"
entry = "pnsd.demo:sleep"
idempotent = true
concurrency = 4
timeout = 600
"""


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str) -> Iterator[tuple[DaemonProcess, DaemonProcess]]:
    started: list[DaemonProcess] = []
    try:
        for node in ("node-a", "node-b"):
            config = NODE_CONFIG.format(url=pg_url, node=node, ttl=LEASE_TTL)
            started.append(spawn_daemon(tmp_path / node, config))
        yield started[0], started[1]
    finally:
        for daemon in started:
            if daemon.process.poll() is None:
                daemon.terminate(timeout=60)


def submit(client: Client, pts: str, data: Any) -> str:
    return str(client.call("submit", {"pts": pts, "input": data})["job"]["id"])


def status(client: Client, job: str) -> dict[str, Any]:
    record: dict[str, Any] = client.call("job.status", {"job": job})["job"]
    return record


def wait_for(check: Any, *, timeout: float, what: str) -> None:
    """Poll another process's state (there is no event to await across processes)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what}")
        time.sleep(0.1)


def test_a_killed_nodes_acknowledged_jobs_all_end_known(
        nodes: tuple[DaemonProcess, DaemonProcess]) -> None:
    a, b = nodes
    with a.client() as on_a, b.client() as on_b:
        echoed = {submit(on_a, "echo", {"n": n}): {"n": n} for n in range(5)}
        wait_for(lambda: all(status(on_a, j)["status"] == "successful" for j in echoed),
                 timeout=30, what="the echo jobs finished on node-a")
        plain = [submit(on_a, "sleep", {"seconds": 300}) for _ in range(3)]
        idem = [submit(on_a, "isleep", {"seconds": 3}) for _ in range(8)]  # 4 run, 4 queue
        wait_for(lambda: all(status(on_a, j)["status"] == "running" for j in plain),
                 timeout=30, what="the plain sleeps run on node-a")
        states = [status(on_a, j)["status"] for j in idem]
        assert set(states) <= {"accepted", "running"}, states
        a.process.kill()     # SIGKILL: no goodbye, no lease release
        a.process.wait(timeout=30)

        def settled() -> bool:
            return all(status(on_b, j)["status"] in ("successful", "failed")
                       for j in [*plain, *idem])

        wait_for(settled, timeout=SETTLE_TIMEOUT, what="node-b settled node-a's jobs")
        for job in plain:     # not idempotent: failed with the reason, never run twice
            record = status(on_b, job)
            assert (record["status"], record["reason"], record["node"]) == (
                "failed", "node lost", "node-b"), record
            assert "node node-a stopped renewing its lease" in record["message"]
        for job in idem:      # idempotent: run again on the survivor, with the right result
            record = on_b.result(job)
            assert record["result"] == {"slept": 3}
            assert (record["job"]["status"], record["job"]["node"]) == ("successful", "node-b")
        for job, data in echoed.items():   # finished before the crash: still there, via b
            record = on_b.result(job)
            assert (record["result"], record["job"]["node"]) == (data, "node-a")
        store = on_b.call("status", {})["store"]
        assert store["reaped"] == len(plain) + len(idem)
        assert (store["shared"], store["node"]) == (True, "node-b")
