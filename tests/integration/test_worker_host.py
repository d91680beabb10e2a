"""The worker hosting mode with real worker processes: dispatch, death, hangs, budgets, stop.

Every test runs on both transports (a ZeroMQ socket, and the workers' stdin and stdout): the
supervision above the wire must not tell them apart."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio
from structlog.testing import capture_logs

from harness.procs import alive, group_members, naming
from pnsd.errors import InvalidSpec, RunTimeout, Unavailable, WorkerDied
from pnsd.hosts.worker import WorkerHost
from pnsd.hosts.workerslot import WorkerSlot, WorkerTuning
from pnsd.spec import parse_spec
from protocols.codec import Codec
from protocols.context import RunContext
from tests.waiting import until

pytestmark = pytest.mark.slow

KEY = b"worker-host-test-key"
FAST = WorkerTuning(heartbeat=0.2, missed_beats=3, start_timeout=20.0, cancel_grace=0.5,
                    restarts=5, restart_window=60.0, backoff_first=0.05, backoff_max=0.5)

PTS_MODULE = '''
import os, subprocess, sys, time

def slow_pid(seconds, ctx):
    ctx.progress(1, str(os.getpid()))
    ctx.wait_cancelled(seconds)
    return os.getpid()

def stubborn(seconds, ctx):
    ctx.progress(1, str(os.getpid()))
    time.sleep(seconds)          # ignores cancel
    return "finished"

def crash(data):
    os._exit(7)

def flood(megabytes):
    line = "x" * 99 + "\\n"
    chunk = line * 10000            # about 1 MB
    for _ in range(megabytes):
        sys.stdout.write(chunk)
        sys.stderr.write(chunk)
    sys.stdout.flush()
    return "flooded"

def bad_progress(data, ctx):
    ctx.progress(float("nan"), "refused by the runtime's own ctx")
    ctx._on_progress(float("-inf"), "raw")   # what a worker in another language may send
    return data

def forker(seconds, ctx):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    ctx.progress(1, str(child.pid))
    time.sleep(seconds)
    return child.pid
'''

HostMaker = Callable[..., Awaitable[WorkerHost]]


@pytest.fixture(params=["zmq", "stdio"])
async def make_host(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[HostMaker]:
    (tmp_path / "ptsmod.py").write_text(PTS_MODULE)
    transport = request.param
    context = zmq.Context()
    hosts: list[WorkerHost] = []

    async def make(table: Mapping[str, Any], tuning: WorkerTuning = FAST,
                   start: bool = True) -> WorkerHost:
        spec = parse_spec("t", {"mode": "worker", "pythonpath": [str(tmp_path)],
                                "transport": transport, **table})
        host = WorkerHost(spec, context=context, run_dir=tmp_path / "run", key=KEY,
                          tuning=tuning)
        hosts.append(host)
        if start:
            await host.start()
        return host

    try:
        yield make
    finally:
        for host in hosts:
            await host.stop(grace=1.0)
        context.term()
        assert [pid for pid, _ in naming(tmp_path, environ=False)] == []


class Watch:
    """A RunContext whose first progress message (the worker's pid) can be awaited."""

    def __init__(self) -> None:
        self.first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.progress: list[tuple[int, str]] = []
        self.lines: list[str] = []
        self.ctx = RunContext("job-1", self._on_progress, self.lines.append)

    def _on_progress(self, percent: int, message: str) -> None:
        self.progress.append((percent, message))
        if not self.first.done():
            self.first.set_result(message)

    async def pid(self) -> int:
        return int(await asyncio.wait_for(self.first, 20))


async def test_echo_and_hello_and_hooks_run_on_workers(make_host: HostMaker) -> None:
    host = await make_host({"entry": "pnsd.demo:hello", "init": "pnsd.demo:init",
                            "clean": "pnsd.demo:clean", "workers": 2})
    assert host.state().state == "ready"
    assert len(host.state().details["pids"]) == 2
    greeting = await host.run({"theName": "Ann"}, timeout=10, ctx=RunContext())
    assert greeting.startswith("hello Ann! From ")
    assert await host.hook("init", timeout=10) == "hello initialised"
    assert await host.hook("config", timeout=10) is None
    echo = await make_host({"entry": "pnsd.demo:echo"})
    assert await echo.run({"b": b"\x00" * 100_000}, timeout=10, ctx=RunContext()) == {
        "b": b"\x00" * 100_000}


async def test_concurrent_runs_go_to_different_workers(make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:slow_pid", "workers": 2})
    pids = await asyncio.gather(*(host.run(0.3, timeout=10, ctx=RunContext()) for _ in range(2)))
    assert sorted(pids) == sorted(host.state().details["pids"])


async def test_each_worker_shows_whether_it_serves_a_run(make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:slow_pid", "workers": 2})

    def busy() -> dict[int, bool]:
        return {w["pid"]: w["busy"] for w in host.state().details["each"]}

    assert set(busy().values()) == {False}
    watch = Watch()
    run = asyncio.create_task(host.run(30, timeout=60, ctx=watch.ctx))
    pid = await watch.pid()                     # the run has started on that worker
    others = set(busy()) - {pid}
    await until(lambda: busy()[pid] and not any(busy()[p] for p in others))
    assert host.state().details["busy"] == 1
    run.cancel()                                # the cancel ladder replaces that worker
    with pytest.raises(asyncio.CancelledError):
        await run
    await until(lambda: host.state().details["ready"] == 2 and set(busy().values()) == {False})
    assert await host.run(0, timeout=20, ctx=RunContext()) in busy()
    assert set(busy().values()) == {False}


async def test_runs_beyond_the_free_workers_wait_their_turn(make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:slow_pid"})      # one worker
    pid = host.state().details["pids"][0]
    runs = [asyncio.create_task(host.run(0.1, timeout=20, ctx=RunContext())) for _ in range(4)]
    assert await asyncio.gather(*runs) == [pid] * 4
    with pytest.raises(RunTimeout, match="no worker free"):   # a waiter that times out
        await asyncio.gather(host.run(0.5, timeout=20, ctx=RunContext()),
                             host.run(0, timeout=0.2, ctx=RunContext()))
    assert await host.run(0, timeout=20, ctx=RunContext()) == pid


async def test_a_queued_run_gets_its_whole_timeout_once_a_worker_takes_it(
        make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:slow_pid"})      # one worker
    pid = host.state().details["pids"][0]
    first = asyncio.create_task(host.run(0.4, timeout=20, ctx=RunContext()))
    await until(lambda: host.state().details["busy"] == 1)   # first takes the worker
    assert await host.run(0.4, timeout=0.6, ctx=RunContext()) == pid   # 0.4 s in line
    assert await first == pid


async def test_a_caller_that_gives_up_in_line_leaves_the_line(make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:slow_pid"})
    pid = host.state().details["pids"][0]
    first = asyncio.create_task(host.run(0.3, timeout=20, ctx=RunContext()))
    await until(lambda: host.state().details["busy"] == 1)
    queued = asyncio.create_task(host.run(0, timeout=20, ctx=RunContext()))
    await until(lambda: host.state().details["waiting"] == 1)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert host.state().details["waiting"] == 0
    assert await first == pid
    assert await host.run(0, timeout=20, ctx=RunContext()) == pid
    assert host.state().details["busy"] == 0


async def test_a_short_timeout_after_a_long_one_expires_on_time(make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:slow_pid", "workers": 2})
    long_run = asyncio.create_task(host.run(0.5, timeout=60, ctx=RunContext()))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RunTimeout, match=r"exceeded 0\.3 s"):
        await host.run(30, timeout=0.3, ctx=RunContext())
    assert loop.time() - started < 2
    assert await long_run in host.state().details["pids"]     # the long one is unaffected


async def test_progress_and_log_lines_reach_the_run_context(make_host: HostMaker) -> None:
    host = await make_host({"entry": "pnsd.demo:hello"})
    watch = Watch()
    await host.run("Bo", timeout=10, ctx=watch.ctx)
    assert watch.lines == ["greeting Bo"]
    sleeper = await make_host({"entry": "pnsd.demo:sleep"})
    watch = Watch()
    await sleeper.run(0.3, timeout=10, ctx=watch.ctx)
    assert watch.progress[-1] == (100, "done")


async def test_a_progress_of_nan_or_inf_from_a_worker_is_ignored_and_the_result_arrives(
        make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:bad_progress"})
    watch = Watch()
    with capture_logs() as logs:
        assert await host.run({"x": 1}, timeout=10, ctx=watch.ctx) == {"x": 1}
    assert watch.progress == []
    assert watch.lines == ["progress ignored: nan is not a finite number"]
    assert [e["event"] for e in logs].count("worker_event_ignored") == 1


async def test_sigkill_mid_run_fails_it_with_the_signal_and_a_new_worker_serves(
        make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:slow_pid"})
    watch = Watch()
    run = asyncio.create_task(host.run(30, timeout=60, ctx=watch.ctx))
    victim = await watch.pid()
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerDied, match="killed by signal SIGKILL"):
        await asyncio.wait_for(run, 10)
    assert await host.run(0, timeout=20, ctx=RunContext()) != victim
    assert host.state().details["restarts"] == 1


async def test_an_idempotent_pts_runs_a_dead_workers_run_again_once(
        make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:slow_pid", "idempotent": True})
    watch = Watch()
    run = asyncio.create_task(host.run(0.5, timeout=60, ctx=watch.ctx))
    victim = await watch.pid()
    os.kill(victim, signal.SIGKILL)
    assert await asyncio.wait_for(run, 20) not in (victim, None)     # the respawned worker's pid
    watch = Watch()
    run = asyncio.create_task(host.run(30, timeout=60, ctx=watch.ctx))
    os.kill(await watch.pid(), signal.SIGKILL)                     # its first worker dies
    watch.first = asyncio.get_running_loop().create_future()
    os.kill(await watch.pid(), signal.SIGKILL)                     # and the second: no third
    with pytest.raises(WorkerDied, match="killed by signal SIGKILL"):
        await asyncio.wait_for(run, 20)


async def test_a_timeout_kills_a_stubborn_worker_and_respawns_it(make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:stubborn"})
    watch = Watch()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(RunTimeout, match=r"exceeded 0\.5 s"):
        await host.run(60, timeout=0.5, ctx=watch.ctx)
    assert loop.time() - started < 5
    victim = await watch.pid()
    await until(lambda: not alive(victim) and host.state().state == "ready")
    assert await host.run(0, timeout=20, ctx=RunContext()) == "finished"
    assert host.state().details["restarts"] == 0     # a timeout does not spend the budget


async def test_a_timeout_of_a_cooperative_run_keeps_the_worker(make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:slow_pid"})
    pid = host.state().details["pids"][0]
    with pytest.raises(RunTimeout):
        await host.run(30, timeout=0.3, ctx=RunContext())
    assert await host.run(0, timeout=20, ctx=RunContext()) == pid


async def test_a_cancelled_run_returns_at_once_and_the_worker_is_replaced(
        make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:stubborn"})
    watch = Watch()
    run = asyncio.create_task(host.run(60, timeout=60, ctx=watch.ctx))
    victim = await watch.pid()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, 2)
    await until(lambda: not alive(victim))
    assert await host.run(0, timeout=20, ctx=RunContext()) == "finished"


async def test_a_stopped_worker_is_found_by_heartbeat_and_replaced(make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:slow_pid", "workers": 2})
    watch = Watch()
    run = asyncio.create_task(host.run(30, timeout=60, ctx=watch.ctx))
    busy = await watch.pid()
    idle = next(pid for pid in host.state().details["pids"] if pid != busy)
    os.kill(busy, signal.SIGSTOP)
    os.kill(idle, signal.SIGSTOP)
    with pytest.raises(WorkerDied, match="no heartbeat"):
        await asyncio.wait_for(run, 10)
    await until(lambda: host.state().state == "ready")
    assert not {busy, idle} & set(host.state().details["pids"])
    assert await host.run(0, timeout=20, ctx=RunContext()) in host.state().details["pids"]


async def test_a_worker_that_cannot_load_its_entry_fails_start_clearly(
        make_host: HostMaker) -> None:
    with pytest.raises(InvalidSpec) as caught:
        await make_host({"entry": "no_such_module_xyz:run", "workers": 2})
    message = caught.value.message
    assert "PTS t" in message and "exit code 3" in message
    assert "No module named 'no_such_module_xyz'" in message


async def test_crashing_past_the_restart_budget_makes_the_pts_unavailable(
        make_host: HostMaker) -> None:
    tuning = WorkerTuning(heartbeat=0.2, restarts=2, restart_window=60.0, backoff_first=0.01,
                          start_timeout=20.0)
    host = await make_host({"entry": "ptsmod:crash"}, tuning)
    for _ in range(3):    # each run waits for the respawned worker
        with pytest.raises(WorkerDied, match="exit code 7"):
            await host.run(None, timeout=20, ctx=RunContext())
    state = host.state()
    assert state.state == "unavailable"
    assert "restart budget exhausted" in state.reason and "exit code 7" in state.reason
    with pytest.raises(Unavailable, match="restart budget"):
        await host.run(None, timeout=5, ctx=RunContext())


async def test_a_flood_of_output_is_capped_and_the_host_keeps_serving(
        make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:flood"})
    with capture_logs() as logs:
        assert await host.run(25, timeout=120, ctx=RunContext()) == "flooded"   # 50 MB
    lines = [e for e in logs if e["event"] == "worker_output"]
    assert 0 < len(lines) < 2000
    assert all(len(e["line"]) <= FAST.output_line for e in lines)
    assert any(e["event"] == "worker_output_dropped" for e in logs)
    assert await host.run(0, timeout=20, ctx=RunContext()) == "flooded"


async def test_a_hello_that_comes_before_the_spawn_is_recorded_is_kept(
        make_host: HostMaker, monkeypatch: pytest.MonkeyPatch) -> None:
    """A quick worker may say hello while the daemon is still recording its spawn (the await
    of the process's creation): that hello is kept and handled once the spawn is recorded,
    never dropped as from an unknown worker (which left the start waiting for good)."""
    spawn = WorkerSlot.spawn

    async def hello_first(self: WorkerSlot, *args: Any, **kwargs: Any) -> Any:
        child = await spawn(self, *args, **kwargs)
        process, self.process = self.process, None      # as while the spawn is recorded
        await until(lambda: self.early is not None, timeout=20)
        self.process = process
        return child

    monkeypatch.setattr(WorkerSlot, "spawn", hello_first)
    host = await make_host({"entry": "pnsd.demo:echo", "workers": 2})
    assert host.state().state == "ready"
    assert await host.run({"x": 1}, timeout=20, ctx=RunContext()) == {"x": 1}


async def test_malformed_and_foreign_frames_are_dropped(make_host: HostMaker) -> None:
    host = await make_host({"entry": "pnsd.demo:echo"})
    if host.spec.transport == "stdio":
        pytest.skip("a ZeroMQ socket's rogue peers; stdio streams: test_worker_stdio.py")
    context = zmq.asyncio.Context()
    rogue = context.socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.connect(host._launch.endpoint)
    with capture_logs() as logs:
        await rogue.send_multipart([b"garbage"])
        await rogue.send_multipart(Codec(KEY).encode("worker.hello", {"pid": 1}))
        await rogue.send_multipart(Codec(b"wrong").encode("task.rep", {"result": 1}))
        await until(lambda: sum(e["event"] == "worker_message_ignored" for e in logs) == 3)
        host._receive([b"w0.1", b"PNS", b"", b"not msgpack", b""])   # a known worker's junk
        host._receive([b"w0.1", b"junk"])
        host._receive([b"w0.1", *Codec(b"wrong").encode("worker.heartbeat", {})])
    rogue.close()
    context.term()
    refused = [e for e in logs if e["event"] == "worker_message_refused"]
    # the signature is checked before anything is decoded: unsigned junk is refused as auth
    assert [e["code"] for e in refused] == ["auth", "malformed", "auth"]
    assert await host.run("still fine", timeout=10, ctx=RunContext()) == "still fine"
    assert host.state().details["ready"] == 1


async def test_stop_leaves_no_process_behind(make_host: HostMaker, tmp_path: Path) -> None:
    host = await make_host({"entry": "ptsmod:forker", "workers": 2})
    pids = list(host.state().details["pids"])
    watch = Watch()
    run = asyncio.create_task(host.run(60, timeout=60, ctx=watch.ctx))
    grandchild = await watch.pid()
    await host.stop(grace=0.5)
    with pytest.raises(Unavailable):
        await asyncio.wait_for(run, 5)
    assert not alive(grandchild)
    for pgid in pids:
        assert group_members(pgid) == []
    assert [pid for pid, _ in naming(tmp_path, environ=False)] == []
    assert not list((tmp_path / "run").iterdir())    # socket, key copy and lib dir removed
    with pytest.raises(Unavailable):
        await host.run(0, timeout=1, ctx=RunContext())


async def test_prefetched_tasks_wait_at_the_worker_and_one_cancelled_there_spares_it(
        make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsmod:slow_pid", "prefetch": 2})    # one worker
    pid = host.state().details["pids"][0]
    if host.spec.transport == "stdio":
        # a runtime that keeps no queue answers held tasks busy: they go back to the daemon's
        # line and run after all, none failed, the worker kept
        runs = [asyncio.create_task(host.run(t, timeout=20, ctx=RunContext()))
                for t in (0.5, 0, 0)]
        assert await asyncio.gather(*runs) == [pid, pid, pid]
        assert host.state().details["restarts"] == 0
        return
    # first outlasts the cancel grace (0.5 s): a worker that did not answer the cancel of a
    # held task would be killed under it
    first = asyncio.create_task(host.run(1.5, timeout=20, ctx=RunContext()))
    await until(lambda: host.state().details["busy"] == 1)
    held = [asyncio.create_task(host.run(0, timeout=20, ctx=RunContext())) for _ in range(2)]
    await until(lambda: host.state().details["waiting"] == 2)   # both sent on, behind first
    held[0].cancel()                    # answered by the worker, which runs on
    with pytest.raises(asyncio.CancelledError):
        await held[0]
    assert await first == pid
    assert await held[1] == pid
    assert host.state().details["pids"] == [pid]     # not killed: no cancel ladder's end
    assert host.state().details["restarts"] == 0
