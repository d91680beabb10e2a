"""Worker supervision without processes: budgets, output caps, exit reasons, launch files."""

from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path

import pytest
import zmq.asyncio
from structlog.testing import capture_logs

from pnsd.errors import BadRequest, Unavailable
from pnsd.hosts.children import OutputForwarder
from pnsd.hosts.rlimits import describe_exit
from pnsd.hosts.worker import WorkerHost
from pnsd.hosts.workerslot import (
    PROTOCOLS_DIR,
    Launch,
    RestartPolicy,
    WorkerTuning,
    worker_command,
    worker_env,
)
from pnsd.spec import Limits, PtsSpec, parse_spec
from protocols.context import RunContext


def _spec(**table: object) -> PtsSpec:
    return parse_spec("t", {"mode": "worker", "entry": "m:f", **table})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_restart_delays_double_up_to_the_cap() -> None:
    policy = RestartPolicy(WorkerTuning(restarts=100, backoff_first=0.1, backoff_max=0.5))
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert policy.total == 5


def test_restarts_past_the_budget_are_refused_until_the_window_moves_on() -> None:
    clock = FakeClock()
    policy = RestartPolicy(WorkerTuning(restarts=2, restart_window=60.0), clock=clock)
    assert policy.delay(1) is not None
    assert policy.delay(2) is not None
    assert policy.delay(3) is None
    clock.now += 61
    assert policy.delay(1) is not None
    assert policy.total == 3


def test_output_is_split_into_capped_lines_and_the_stderr_tail_is_kept() -> None:
    output = OutputForwarder({"pts": "t"}, WorkerTuning(output_line=10))
    with capture_logs() as logs:
        output.feed(2, b"first line is long\nsec")
        output.feed(2, b"ond\n" + b"x" * 50)     # an endless line is cut, not hoarded
        output.feed(1, b"out\n")
        output.flush()
    assert [(e["stream"], e["line"]) for e in logs] == [
        ("stderr", "first line"), ("stderr", "second"), ("stdout", "out"),
        ("stderr", "x" * 10)]
    assert all(e["pts"] == "t" for e in logs)
    assert list(output.tail) == ["first line", "second", "x" * 10]


def test_output_over_the_rate_is_counted_not_logged() -> None:
    output = OutputForwarder({}, WorkerTuning(output_rate=10.0))
    with capture_logs() as logs:
        output.feed(1, b"line\n" * 1000)
        output.flush()
    assert sum(e["event"] == "worker_output" for e in logs) <= 21    # the 2 s burst
    dropped = [e for e in logs if e["event"] == "worker_output_dropped"]
    assert len(dropped) == 1 and dropped[0]["lines"] >= 979


@pytest.mark.parametrize(("code", "limits", "expected"), [
    (0, Limits(), "exit code 0"),
    (3, Limits(), "exit code 3"),
    (-signal.SIGKILL, Limits(), "killed by signal SIGKILL"),
    (-signal.SIGXCPU, Limits(cpu_seconds=5), "killed by signal SIGXCPU: CPU time limit of 5 s"),
    (-signal.SIGSEGV, Limits(), "killed by signal SIGSEGV"),
])
def test_exits_are_described_in_words(code: int, limits: Limits, expected: str) -> None:
    assert describe_exit(code, limits, oom_before=10**9) == expected


def test_the_command_puts_the_runtime_after_launcher_and_interpreter() -> None:
    key = Path("/k")
    plain = worker_command(_spec(init="m:i"), "ipc:///s", key, 0.5)
    assert plain[:3] == [sys.executable, "-m", "protocols.worker"]
    assert plain[plain.index("--init") + 1] == "m:i"
    assert plain[plain.index("--heartbeat") + 1] == "0.5"
    assert "--config" not in plain
    other = worker_command(_spec(python="/opt/py38/bin/python",
                                 command=["env", "X=1"]), "ipc:///s", key, 1.0)
    assert other[:5] == ["env", "X=1", "/opt/py38/bin/python", "-m", "protocols.worker"]
    docker = worker_command(_spec(command=["docker", "run", "-i", "img", "python"]),
                            "ipc:///s", key, 1.0)
    assert docker[:7] == ["docker", "run", "-i", "img", "python", "-m", "protocols.worker"]


def test_the_environment_adds_the_spec_and_a_path_to_protocols_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/old")
    spec = _spec(pythonpath=["/pts"], env={"A": "b"})
    env = worker_env(spec, Path("/lib"))
    assert env["PYTHONPATH"] == os.pathsep.join(["/pts", "/lib", "/old"])
    assert env["A"] == "b"


def test_launch_files_are_private_and_removed(tmp_path: Path) -> None:
    launch = Launch()
    run_dir = tmp_path / ("deep" * 20)                 # too long for a socket path
    launch.prepare(_spec(), run_dir=run_dir, key=b"sekrit", key_file=None,
                   heartbeat=1.0)
    socket_path = launch.endpoint.removeprefix("ipc://")
    assert len(socket_path) <= 100
    key_file = Path(launch.argv[launch.argv.index("--key-file") + 1])
    assert key_file.read_bytes() == b"sekrit"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    lib = Path(launch.env["PYTHONPATH"].split(os.pathsep)[0])
    assert (lib / "protocols").resolve() == PROTOCOLS_DIR
    owned = list(launch.owned)
    launch.remove()
    assert not any(path.exists() for path in owned)
    assert PROTOCOLS_DIR.is_dir()                                # the symlink's target stays


async def test_a_host_that_is_not_started_refuses_runs_and_unknown_hooks(tmp_path: Path) -> None:
    context = zmq.Context()
    host = WorkerHost(_spec(), context=context, run_dir=tmp_path, key=b"")
    try:
        assert host.state().state == "starting"
        with pytest.raises(Unavailable, match="PTS t is starting"):
            await host.run(1, timeout=1, ctx=RunContext())
        with pytest.raises(BadRequest, match="unknown hook"):
            await host.hook("selftest", timeout=1)
        await host.stop(grace=0.1)
        assert host.state().state == "stopped"
    finally:
        context.term()
