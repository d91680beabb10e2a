"""stdio workers under the oldest interpreters pyenv has here (3.6, 3.7), with msgpack only.

Each interpreter gets a venv holding msgpack and nothing else (no pyzmq: none is needed), made
once per session; a test skips, saying why, only if the interpreter is missing or msgpack
cannot be installed for it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq
from structlog.testing import capture_logs

from pnsd.errors import RunTimeout, WorkerDied
from pnsd.hosts.worker import WorkerHost
from pnsd.hosts.workerslot import WorkerTuning
from pnsd.spec import parse_spec
from protocols.context import RunContext
from tests.waiting import until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# msgpack 1.0.3 is the last release with wheels for 3.6; 3.7 takes the newest it can
PACKAGES = {"3.6": "msgpack<1.0.4", "3.7": "msgpack"}
TUNING = WorkerTuning(heartbeat=0.2, missed_beats=3, start_timeout=60.0, cancel_grace=0.5,
                      backoff_first=0.05, backoff_max=0.5)
PTS_MODULE = '''
import asyncio, os, sys, time

def version(data, ctx):
    ctx.progress(50, "half")
    ctx.log("running on %d.%d" % sys.version_info[:2])
    print("a print lands in the log")
    return {"version": list(sys.version_info[:2]), "size": len(data or b""), "data": data}

async def later(data):
    await asyncio.sleep(0.01)
    return data

def slow(seconds, ctx):
    ctx.progress(1, str(os.getpid()))
    ctx.wait_cancelled(seconds)
    return "cancelled" if ctx.cancelled else "finished"

def stubborn(seconds, ctx):
    ctx.progress(1, str(os.getpid()))
    time.sleep(seconds)
    return "finished"

def crash(data):
    os._exit(7)
'''


def _venv(root: Path, version: str) -> Path:
    """A venv of pyenv's ``version`` with msgpack; skip the test if it cannot be made."""
    try:
        pyenv = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("pyenv is not installed here")
    found = sorted(Path(pyenv, "versions").glob(f"{version}.*/bin/python"))
    if not found:
        pytest.skip(f"pyenv has no Python {version} here")
    venv = root / f"py{version}"
    made = subprocess.run([str(found[-1]), "-m", "venv", str(venv)], capture_output=True,
                          text=True, timeout=120, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv with {found[-1]}: {made.stderr.strip()[-300:]}")
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         PACKAGES[version]], capture_output=True, text=True, timeout=240, check=False)
    if installed.returncode != 0:
        pytest.skip(f"cannot install msgpack for {version}: {installed.stderr.strip()[-300:]}")
    return python


@pytest.fixture(scope="session", params=["3.6", "3.7"])
def old_python(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return request.param, _venv(tmp_path_factory.mktemp("stdio-py"), request.param)


@pytest.fixture
async def make_host(old_python: tuple[str, Path],
                    tmp_path: Path) -> AsyncIterator[tuple[str, object]]:
    version, python = old_python
    (tmp_path / "oldpts.py").write_text(PTS_MODULE)
    context = zmq.Context()
    hosts: list[WorkerHost] = []

    async def make(entry: str) -> WorkerHost:
        spec = parse_spec("old", {"mode": "worker", "entry": entry, "transport": "stdio",
                                  "python": str(python), "pythonpath": [str(tmp_path)]})
        host = WorkerHost(spec, context=context, run_dir=tmp_path / "run", key=b"k" * 32,
                          tuning=TUNING)
        hosts.append(host)
        await host.start()
        return host

    try:
        yield version, make
    finally:
        for host in hosts:
            await host.stop(grace=2.0)
        context.term()


def test_the_venv_has_msgpack_and_no_pyzmq(old_python: tuple[str, Path]) -> None:
    version, python = old_python
    probe = subprocess.run([str(python), "-c", "import sys, msgpack; print(sys.version[:3]); "
                            "import zmq"], capture_output=True, text=True, timeout=60,
                           check=False)
    assert probe.stdout.strip() == version
    assert "No module named 'zmq'" in probe.stderr


async def test_a_run_with_progress_log_and_a_blob_on_an_old_python(make_host: tuple) -> None:
    version, make = make_host
    host = await make("oldpts:version")
    assert host.state().details["each"][0]["python"].startswith(version)
    lines: list[str] = []
    progress: list[tuple[int, str]] = []
    ctx = RunContext("j", lambda p, m: progress.append((p, m)), lines.append)
    data = os.urandom(200_000)                  # travels as a blob frame both ways
    with capture_logs() as logs:
        result = await host.run(data, timeout=30, ctx=ctx)
        await until(lambda: any(e.get("line") == "a print lands in the log" for e in logs))
    assert result == {"version": [int(v) for v in version.split(".")], "size": len(data),
                      "data": data}
    assert lines == [f"running on {version}"] and progress == [(50, "half")]
    async_host = await make("oldpts:later")
    assert await async_host.run({"a": [1, 2]}, timeout=30, ctx=RunContext()) == {"a": [1, 2]}


def first_pid() -> tuple[asyncio.Future[int], RunContext]:
    """A RunContext whose first progress message (the worker's pid) can be awaited."""
    first: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_progress(percent: int, message: str) -> None:
        if not first.done():
            first.set_result(int(message))

    return first, RunContext("j", on_progress)


async def test_cancel_and_timeout_on_an_old_python(make_host: tuple) -> None:
    _version, make = make_host
    host = await make("oldpts:slow")
    pid = host.state().details["pids"][0]
    with pytest.raises(RunTimeout):
        await host.run(30, timeout=0.3, ctx=RunContext())
    assert await host.run(0, timeout=30, ctx=RunContext()) == "finished"
    assert host.state().details["pids"] == [pid]          # a cooperative PTS keeps its worker
    stubborn = await make("oldpts:stubborn")
    started, ctx = first_pid()
    run = asyncio.create_task(stubborn.run(60, timeout=60, ctx=ctx))
    await asyncio.wait_for(started, 30)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, 5)
    assert await stubborn.run(0, timeout=30, ctx=RunContext()) == "finished"


async def test_a_crash_and_a_hang_on_an_old_python(make_host: tuple) -> None:
    _version, make = make_host
    crasher = await make("oldpts:crash")
    with pytest.raises(WorkerDied, match="exit code 7"):
        await crasher.run(None, timeout=30, ctx=RunContext())
    host = await make("oldpts:slow")
    started, ctx = first_pid()
    run = asyncio.create_task(host.run(30, timeout=60, ctx=ctx))
    os.kill(await asyncio.wait_for(started, 30), signal.SIGSTOP)
    with pytest.raises(WorkerDied, match="no heartbeat"):
        await asyncio.wait_for(run, 20)
    assert await host.run(0, timeout=30, ctx=RunContext()) == "finished"
