"""Two real pnsd nodes on one PostgreSQL job store: one is SIGKILLed in the middle of jobs, and
every job it had acknowledged ends in a known state with the right result, read through the
node that survived."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.procs import alive, free_port
from pnsd.pidfile import read_pid
from protocols.client import Client
from tests.integration.conftest import DaemonProcess, spawn_daemon

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
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


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": "Basic " + base64.b64encode(b"demo:demo").decode(),
                 "Content-Type": "application/json", "Prefer": "respond-async"})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    """Under /tmp, open to the ``postgres`` user that runs the server when tests run as root
    (pytest's own temporary directories are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="pns-cluster-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_make_cluster_fronts_two_nodes_and_survives_losing_one(
        cluster_dir: Path, pg_server: object) -> None:
    """scripts/cluster.py (what ``make cluster`` runs): a remote worker over tcp:// and CURVE
    serves node-a's echo-remote through pnsweb; pnsweb places runs on both nodes,
    reads every job through either, and once node-a is SIGKILLed its jobs are settled by
    node-b; SIGTERM to the script stops every process it started."""
    port = free_port()
    log = cluster_dir / "cluster.out"
    with log.open("wb") as out:
        script = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "cluster.py"), str(cluster_dir), str(port),
             "demo"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "PNSWEB_PASSWORD": "demo"}, start_new_session=True)
    try:
        wait_for(lambda: "stops everything" in log.read_text(), timeout=120,
                 what="the cluster is up")
        web = f"http://127.0.0.1:{port}"
        code, reply = http("POST", f"{web}/v1/processes/echo-remote/execution",
                           {"inputs": {"via": "tcp-curve"}})     # node-a's remote worker
        assert code == 201, reply
        remote = reply["jobID"]
        wait_for(lambda: http("GET", f"{web}/v1/jobs/{remote}")[1]["status"] == "successful",
                 timeout=60, what="the remote worker's run")
        assert "tcp-curve" in json.dumps(http("GET", f"{web}/v1/jobs/{remote}/results")[1])
        jobs = {}
        for pts, seconds in [("isleep", 2)] * 6 + [("sleep", 300)] * 2:
            code, reply = http("POST", f"{web}/v1/processes/{pts}/execution",
                               {"inputs": {"seconds": seconds}})
            assert code == 201, reply
            jobs[reply["jobID"]] = pts
        a_pid = read_pid(cluster_dir / "node-a" / "run" / "pnsd.pid")
        assert a_pid is not None
        os.kill(a_pid, signal.SIGKILL)

        def settled(job: str) -> bool:
            status = http("GET", f"{web}/v1/jobs/{job}")[1]["status"]
            return status in ("successful", "failed") or (
                jobs[job] == "sleep" and status == "running")   # a sleep on node-b runs on

        wait_for(lambda: all(settled(job) for job in jobs), timeout=SETTLE_TIMEOUT,
                 what="every job settled through pnsweb")
        for job, pts in jobs.items():
            status = http("GET", f"{web}/v1/jobs/{job}")[1]
            if pts == "isleep":
                assert status["status"] == "successful", status
                code, results = http("GET", f"{web}/v1/jobs/{job}/results")
                assert code == 200 and "slept" in json.dumps(results), results
            else:
                assert status["status"] in ("failed", "running"), status
        pids = [int(p) for p in subprocess.run(
            ["pgrep", "-f", str(cluster_dir)], capture_output=True, text=True,
            check=False).stdout.split()]
        assert pids, "the cluster's processes name its directory"
    finally:
        script.send_signal(signal.SIGTERM)
        script.wait(timeout=120)
    assert script.returncode == 0, log.read_text()
    assert "cluster: stopped" in log.read_text()
    assert not [pid for pid in pids if alive(pid)]
