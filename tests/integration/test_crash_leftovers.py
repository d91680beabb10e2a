"""What a daemon leaves behind: private files, and nothing that outlives a SIGKILL of it.

pnsd creates its files for its own user only (and tightens a home others can read); workers
die with the daemon (parent-death signal); a restarted daemon ends the process groups its
previous life started and removes that life's worker sockets and job dirs.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from harness.procs import alive
from tests.integration.conftest import (
    DaemonProcess,
    running_daemon,
    settings_for,
    spawn_daemon,
)
from tests.waiting import until

pytestmark = pytest.mark.slow
SLEEPER = """#!/bin/bash
who=$(cat input/who)
[ "$who" = quick ] && {{ echo done > output/out; exit 0; }}
echo $$ > "{marks}/proc-$who.tmp"; mv "{marks}/proc-$who.tmp" "{marks}/proc-$who"
sleep 300 &
echo $! > "{marks}/child-$who.tmp"; mv "{marks}/child-$who.tmp" "{marks}/child-$who"
wait
"""
WORKER = """
import os, subprocess, time

def run(data):
    if data == "quick":
        return "done"
    child = subprocess.Popen(["sleep", "300"])
    path = os.path.join({marks!r}, f"worker-{{data}}")
    with open(path + ".tmp", "w") as fh:
        fh.write(f"{{os.getpid()}} {{child.pid}}")
    os.replace(path + ".tmp", path)
    time.sleep(300)
"""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_database_blobs_and_home_are_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)         # an existing home others can read and enter
    settings = settings_for(home, "inline_limit = 1024\n")
    async with running_daemon(settings) as node, node.client(timeout=30.0) as client:
        reply = await client.call("run", {"pts": "echo", "input": "x" * 100_000})
        assert reply["result"] == "x" * 100_000
        job = reply["job"]
        await node.daemon.store.flush()
        assert _mode(home) == 0o700
        for suffix in ("", "-wal", "-shm"):
            assert _mode(Path(f"{settings.db_path}{suffix}")) == 0o600, suffix
        blobs = settings.files_dir / job
        assert _mode(blobs) == 0o700
        assert {p.name: _mode(p) for p in blobs.iterdir()} == {
            "input.bin": 0o600, "result.bin": 0o600}


def _config(code: Path) -> str:
    marks = code / "marks"
    marks.mkdir(parents=True)
    script = code / "sleeper"
    script.write_text(SLEEPER.format(marks=marks))
    script.chmod(0o755)
    (code / "busyw.py").write_text(WORKER.format(marks=str(marks)))
    return (f'demo = false\n[pts.slow]\nmode = "process"\nrun = [{str(script)!r}]\n'
            'inputs = ["who"]\ntimeout = 600\nconcurrency = 2\n'
            f'[pts.busy]\nmode = "worker"\nentry = "busyw:run"\npythonpath = [{str(code)!r}]\n'
            'workers = 2\ntimeout = 600\n')


def _pids(marks: Path) -> dict[str, int]:
    found: dict[str, int] = {}
    for path in marks.iterdir():
        if not path.name.endswith(".tmp"):
            for index, pid in enumerate(path.read_text().split()):
                found[f"{path.name}.{index}"] = int(pid)
    return found


def _submit(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        for who in ("a", "b"):
            client.call("submit", {"pts": "slow", "input": {"who": who}})
            client.call("submit", {"pts": "busy", "input": who})


def _serves(daemon: DaemonProcess) -> None:
    with daemon.client() as client:
        reply = client.call("run", {"pts": "slow", "input": {"who": "quick"}})
        assert reply["result"]["outputs"] == {"out": "done\n"}
        assert client.call("run", {"pts": "busy", "input": "quick"})["result"] == "done"


@pytest.mark.timeout(120)
async def test_a_restart_after_sigkill_ends_the_previous_lifes_processes_and_files(
    tmp_path: Path,
) -> None:
    home, code = tmp_path / "home", tmp_path / "code"
    extra = _config(code)
    first = await asyncio.to_thread(spawn_daemon, home, extra)
    second: DaemonProcess | None = None
    pids: dict[str, int] = {}
    try:
        await asyncio.to_thread(_submit, first)
        await until(lambda: len(_pids(code / "marks")) == 8, timeout=30, every=0.05)
        pids = _pids(code / "marks")
        stale = [*(home / "run").glob("w-*"), *(home / "work").glob("*/gen-*")]
        assert len(stale) == 3     # the worker generation's socket and lib, a process area
        first.process.kill()
        await asyncio.to_thread(first.process.wait, 30)
        workers = {name: pid for name, pid in pids.items() if name.endswith(".0")
                   and name.startswith("worker-")}
        await until(lambda: not any(map(alive, workers.values())), timeout=10, every=0.05)
        survivors = [pid for pid in pids.values() if alive(pid)]
        assert survivors, "the process-mode runs outlive a SIGKILL until the restart"
        second = await asyncio.to_thread(spawn_daemon, home, extra)
        await until(lambda: not any(map(alive, pids.values())), timeout=10, every=0.05)
        assert [path for path in stale if path.exists()] == []
        recorded = {p.name for p in (home / "run" / "groups").iterdir()}
        assert not recorded & {str(pid) for pid in pids.values()}, (recorded, pids)
        await asyncio.to_thread(_serves, second)
    finally:
        for daemon in (first, second):
            if daemon is not None and daemon.process.poll() is None:
                daemon.terminate()
        for pid in pids.values():
            if alive(pid):
                os.kill(pid, 9)
