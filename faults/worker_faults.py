"""Faults 1 and 3: a worker SIGKILLed mid-job (repeated), and a worker SIGSTOPped (hung).

The PTS is a small module of our own (``faultpts.nap``, written into the fault's directory and
reached through the spec's ``pythonpath``) in ``worker`` mode with two workers: it writes its
pid to a marker file named in the input, sleeps, and returns its input. Each try starts a long
run A and a short run B at once (they land on different workers), signals A's worker once its
marker appears, and then expects: A fails (``worker_died``; for a hang also ``timeout``, both
expected), B succeeds, later runs succeed, the signalled process is gone and the PTS is back to
two ready workers. The daemon allows 5 restarts per 60 s per PTS (then marks it unavailable,
so that a crash loop cannot eat the machine), so the kills are spread over several PTS, at most
4 each.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from faults.procs import Node
from faults.report import Row
from faults.runner import Context
from harness.procs import alive
from protocols.client import AsyncClient
from protocols.errors import ErrorCode, PnsError, RemoteError

KILLS_PER_PTS = 4          # under the daemon's restart budget of 5 per 60 s
RECOVER_TIMEOUT = 15.0

PTS_MODULE = '''
"""A PTS for the fault suite: report the pid, sleep, return the input."""
import os, pathlib, time

def nap(data, ctx=None):
    marker = data.get("marker")
    if marker:
        tmp = pathlib.Path(marker + ".tmp")
        tmp.write_text(str(os.getpid()))
        tmp.rename(marker)
    deadline = time.monotonic() + float(data.get("seconds", 0))
    while time.monotonic() < deadline:
        if ctx is not None and ctx.cancelled:
            raise RuntimeError("cancelled")
        time.sleep(0.02)
    return {"pid": os.getpid(), "echo": data.get("echo")}
'''


def _spec(name: str, directory: Path, *, timeout: float) -> str:
    return (f'[pts.{name}]\nmode = "worker"\nentry = "faultpts:nap"\n'
            f"pythonpath = [{str(directory)!r}]\nworkers = 2\ntimeout = {timeout}\n"
            "queue = 16\n")


def _node(ctx: Context, names: list[str], *, timeout: float) -> Node:
    code = ctx.dir / "pts"
    code.mkdir()
    (code / "faultpts.py").write_text(PTS_MODULE)
    (ctx.dir / "markers").mkdir()
    specs = "\n".join(_spec(name, code, timeout=timeout) for name in names)
    return Node(ctx.dir, "home", pts=specs)


def worker_kill(ctx: Context) -> Row:
    """Fault 1: SIGKILL the worker running a job, ``tries`` times."""
    tries = ctx.pick(10, 3)
    names = [f"nap-{i}" for i in range((tries + KILLS_PER_PTS - 1) // KILLS_PER_PTS)]
    node = _node(ctx, names, timeout=30)
    row = Row("worker-kill", tries=tries)
    try:
        node.start_daemon()
        asyncio.run(_tries(node, ctx, row, names, signal.SIGKILL, long_run=3.0,
                           expected=(ErrorCode.WORKER_DIED,)))
    finally:
        node.stop()
    return row


def worker_stop(ctx: Context) -> Row:
    """Fault 3: SIGSTOP the worker running a job; the heartbeat watch must replace it."""
    tries = ctx.pick(3, 1)
    node = _node(ctx, ["nap-hang"], timeout=20)
    row = Row("worker-stop", tries=tries)
    try:
        node.start_daemon()
        asyncio.run(_tries(node, ctx, row, ["nap-hang"], signal.SIGSTOP, long_run=30.0,
                           expected=(ErrorCode.WORKER_DIED, ErrorCode.TIMEOUT)))
    finally:
        node.stop()
    return row


async def _tries(node: Node, ctx: Context, row: Row, names: list[str], signum: int, *,
                 long_run: float, expected: tuple[str, ...]) -> None:
    took: list[float] = []
    async with node.async_client(timeout=60.0) as client:
        for attempt in range(row.tries):
            name = names[attempt // KILLS_PER_PTS] if len(names) > 1 else names[0]
            seconds = await _one_try(client, ctx, row, name, attempt=attempt, signum=signum,
                                     long_run=long_run,
                                     expected=expected)
            if seconds is not None:
                took.append(seconds)
            await _later_runs(client, row, name, attempt)
            await _recovered(client, row, name)
    if took:
        row.note(f"the signalled run failed after {min(took):.2f}-{max(took):.2f} s "
                 f"({'heartbeat watch' if signum == signal.SIGSTOP else 'exit noticed'})")


async def _one_try(client: AsyncClient, ctx: Context, row: Row, name: str, *, attempt: int,
                   signum: int, long_run: float, expected: tuple[str, ...]) -> float | None:
    marker_a = ctx.dir / "markers" / f"{attempt}-a"
    a_input = {"seconds": long_run, "marker": str(marker_a), "echo": f"a{attempt}"}
    b_input = {"seconds": 0.8, "echo": f"b{attempt}"}
    run_a = asyncio.create_task(client.call("run", {"pts": name, "input": a_input}))
    await asyncio.sleep(0.05)   # A is dispatched first, so B lands on the other worker
    run_b = asyncio.create_task(client.call("run", {"pts": name, "input": b_input}))
    row.sent += 2
    pid = await _marker_pid(marker_a)
    if pid is None:
        row.fail(f"try {attempt}: run A never started on a worker")
        await asyncio.gather(run_a, run_b, return_exceptions=True)
        return None
    signalled = time.monotonic()
    os.kill(pid, signum)
    outcome_a = (await asyncio.gather(run_a, return_exceptions=True))[0]
    took = time.monotonic() - signalled
    outcome_b = (await asyncio.gather(run_b, return_exceptions=True))[0]
    if isinstance(outcome_a, RemoteError) and outcome_a.code in expected:
        row.expected += 1
    else:
        row.fail(f"try {attempt}: run on the signalled worker ended with {_what(outcome_a)}, "
                 f"expected {'/'.join(expected)}")
    if isinstance(outcome_b, BaseException) or outcome_b["result"]["echo"] != f"b{attempt}":
        row.fail(f"try {attempt}: run on the other worker: {_what(outcome_b)}")
    await _gone(pid, row, attempt)
    return took


async def _later_runs(client: AsyncClient, row: Row, name: str, attempt: int) -> None:
    for index in range(3):
        row.sent += 1
        try:
            reply = await client.call("run", {"pts": name, "input": {"echo": [attempt, index]}})
            if reply["result"]["echo"] != [attempt, index]:
                row.fail(f"try {attempt}: a later run returned {reply['result']!r}")
        except PnsError as exc:
            row.fail(f"try {attempt}: a later run failed: {exc}")


async def _recovered(client: AsyncClient, row: Row, name: str) -> None:
    deadline = time.monotonic() + RECOVER_TIMEOUT
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = (await client.call("status", {}))["pts"].get(name, {})
        if state.get("state") == "ready" and state.get("ready") == state.get("workers") == 2:
            return
        await asyncio.sleep(0.1)   # polling: the daemon offers no event for this
    row.fail(f"PTS {name} did not recover to 2 ready workers: {state.get('state')} "
             f"{state.get('reason')}")


async def _marker_pid(marker: Path, timeout: float = 15.0) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(await asyncio.to_thread(marker.read_text))
        except (OSError, ValueError):
            await asyncio.sleep(0.01)   # the worker writes it when the run starts
    return None


async def _gone(pid: int, row: Row, attempt: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        await asyncio.sleep(0.05)
    row.fail(f"try {attempt}: the signalled worker {pid} is still there")
    os.kill(pid, signal.SIGKILL)


def _what(outcome: Any) -> str:
    if isinstance(outcome, RemoteError):
        return f"error {outcome.code}: {outcome.message}"
    if isinstance(outcome, BaseException):
        return f"{type(outcome).__name__}: {outcome}"
    return f"success {outcome!r}"[:200]
