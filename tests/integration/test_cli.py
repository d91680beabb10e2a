"""The `pnsd` command against a real daemon process: lifecycle, runs, jobs, and crash recovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.procs import alive, descendants
from protocols.client import Client
from protocols.errors import RemoteError
from tests.integration.conftest import DaemonProcess, child_env, spawn_daemon, write_config

pytestmark = pytest.mark.slow


def wait_running(client: Client, job: str) -> None:
    for event in client.stream("job.watch", {"job": job}, timeout=30):
        if event.get("status") == "running":
            return


def crash(daemon: DaemonProcess) -> None:
    """SIGKILL the daemon's whole process group, as a crash would end it."""
    if daemon.process.poll() is None:
        os.killpg(daemon.process.pid, signal.SIGKILL)
    daemon.process.wait(timeout=30)


def test_run_status_and_stop_leave_nothing_behind(daemon_process: DaemonProcess) -> None:
    ran = daemon_process.cli("run", "echo", "--input", '{"x": 1}')
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"x": 1}
    status = daemon_process.cli("status", "--json")
    assert json.loads(status.stdout)["pts"]["echo"]["state"] == "ready"
    assert daemon_process.cli("pts", "show", "hello").returncode == 0
    worker = daemon_process.cli("run", "hello-worker", "--input", '{"name": "Ann"}')
    assert json.loads(worker.stdout).startswith("hello Ann! From ")
    children = descendants(daemon_process.process.pid)
    assert children, "the worker PTS should have child processes"
    settings = daemon_process.settings
    stopped = daemon_process.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert daemon_process.process.wait(timeout=30) == 0
    assert not settings.pidfile.exists()
    assert not Path(settings.endpoint.removeprefix("ipc://")).exists()
    assert not [pid for pid in children if alive(pid)]


def test_cli_errors_are_one_line_with_a_non_zero_exit(daemon_process: DaemonProcess) -> None:
    for args in (("run", "nope", "--input", "1"), ("run", "fail", "--input", "1"),
                 ("run", "echo", "--input", "{bad json"), ("jobs", "show", "0" * 32)):
        result = daemon_process.cli(*args)
        assert result.returncode != 0
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("pnsd: ")
        assert "Traceback" not in result.stderr


def test_a_cli_with_another_key_is_told_so_in_one_line_at_once(
        daemon_process: DaemonProcess) -> None:
    key_file = daemon_process.settings.key_file
    key_file.write_text("0" * 64)        # the daemon keeps the key it started with
    started = time.monotonic()
    result = daemon_process.cli("pts", "list")
    assert result.returncode != 0 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("pnsd: auth: bad message signature")
    assert time.monotonic() - started < 20      # not the client's 60 s timeout


def test_cli_talks_to_no_daemon_with_exit_3(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = write_config(home)
    result = subprocess.run(
        [sys.executable, "-m", "pnsd", "status", "--home", str(home), "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=child_env(home), check=False)
    assert result.returncode == 3 and result.stderr.startswith("pnsd: ")


def test_jobs_from_the_cli(daemon_process: DaemonProcess) -> None:
    submitted = daemon_process.cli("submit", "sleep", "--input", '{"seconds": 0.3}')
    job_id = submitted.stdout.strip()
    assert len(job_id) == 32, submitted.stderr
    watched = daemon_process.cli("jobs", "watch", job_id)
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert events[-1]["status"] == "successful"
    assert json.loads(daemon_process.cli("jobs", "result", job_id).stdout) == {"slept": 0.3}
    shown = json.loads(daemon_process.cli("jobs", "show", job_id).stdout)
    assert shown["status"] == "successful" and shown["pts"] == "sleep"
    listed = json.loads(daemon_process.cli("jobs", "list", "--pts", "sleep").stdout)
    assert job_id in [j["id"] for j in listed["jobs"]]
    long_job = daemon_process.cli("submit", "sleep", "--input", '{"seconds": 60}').stdout.strip()
    cancelled = daemon_process.cli("jobs", "cancel", long_job)
    assert cancelled.returncode == 0
    final = [json.loads(line) for line in
             daemon_process.cli("jobs", "watch", long_job).stdout.splitlines()]
    assert final[-1]["status"] == "dismissed"
    not_ready = daemon_process.cli("jobs", "result", long_job)
    assert not_ready.returncode != 0


def test_crash_recovery_keeps_finished_results_and_fails_interrupted_jobs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = spawn_daemon(home)
    try:
        payloads = [{"n": i, "blob": os.urandom(100 + i * 5000)} for i in range(20)]
        with first.client() as client:
            done = [client.call("submit", {"pts": "echo", "input": p})["job"]["id"]
                    for p in payloads]
            for job in done:      # wait for every echo job to finish
                for _ in client.stream("job.watch", {"job": job}, timeout=30):
                    pass
            running = [client.call("submit", {"pts": "sleep",
                                               "input": {"seconds": 60}})["job"]["id"]
                       for _ in range(3)]
            for job in running:
                wait_running(client, job)
    finally:
        crash(first)
    second = spawn_daemon(home)
    try:
        with second.client() as client:
            for job, payload in zip(done, payloads, strict=True):
                assert client.call("job.result", {"job": job})["result"] == payload
            for job in running:
                record = client.call("job.status", {"job": job})["job"]
                assert record["status"] == "failed" and record["reason"] == "daemon restarted"
                with pytest.raises(RemoteError):
                    client.call("job.result", {"job": job})
            assert client.call("run", {"pts": "echo", "input": 7})["result"] == 7
    finally:
        second.terminate()


def test_a_corrupt_database_is_a_clear_error_at_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = write_config(home)
    (home / "jobs.db").write_bytes(b"this is not a database" * 100)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pnsd", "start", "--home", str(home), "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=child_env(home), check=False)
    assert result.returncode != 0 and time.monotonic() - started < 60
    assert str(home / "jobs.db") in result.stderr
    assert "Traceback" not in result.stderr


IDEMPOTENT = """
[pts.nap]
mode = "inproc"
entry = "pnsd.demo:sleep"
idempotent = true
"""


def test_idempotent_jobs_interrupted_by_a_crash_run_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = spawn_daemon(home, IDEMPOTENT)
    try:
        with first.client() as client:
            job = client.call("submit", {"pts": "nap", "input": 1.0})["job"]["id"]
            wait_running(client, job)
    finally:
        crash(first)
    second = spawn_daemon(home, IDEMPOTENT)
    try:
        with second.client() as client:
            events = list(client.stream("job.watch", {"job": job}, timeout=30))
            assert events[-1]["status"] == "successful"
            assert client.call("job.result", {"job": job})["result"] == {"slept": 1.0}
    finally:
        second.terminate()


def test_retention_bounds_are_applied_at_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    bounded = "retention_bytes = 1\n"
    first = spawn_daemon(home, bounded)
    try:
        with first.client() as client:
            ran = client.call("run", {"pts": "echo", "input": "x" * 100})
            assert ran["result"] == "x" * 100    # the caller has its result; the record, over
            job = ran["job"]                     # the bound, goes as soon as it is written
    finally:
        first.terminate()
    second = spawn_daemon(home, bounded)
    try:
        with second.client() as client, pytest.raises(RemoteError) as caught:
            client.call("job.status", {"job": job})
        assert caught.value.code == "not_found"
    finally:
        second.terminate()
