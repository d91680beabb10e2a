"""Fault 2: SIGKILL of pnsd in the middle of a submit load, then a restart.

Several clients ``submit`` echo jobs (inline, worker-mode and large inputs that the store
keeps as files) and a few long ``sleep`` jobs, while a collector reads results of jobs already
acknowledged. pnsd alone is SIGKILLed (its workers must notice and exit by themselves) and
started again on the same home. Then every acknowledged job must be there: finished ones with a
result byte-identical to the input (echo), interrupted ones ``failed`` with reason
``daemon restarted``, ones still queued at the kill (``accepted``: they never started) run
after the restart (an echo must then give its input back; a 30 s sleep is dismissed once seen
queued or running again, to keep the fault short); a result a client has already read must
not turn into anything else. New jobs must run. Submissions in flight at the kill are
unacknowledged and may fail.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import msgpack

from faults.procs import Node
from faults.report import Row
from faults.runner import Context
from protocols.client import AsyncClient
from protocols.errors import ErrorCode, PnsError, RemoteError

RESTART_REASON = "daemon restarted"
WORKER_ECHO = '''
[pts.echo-w]
mode = "worker"
entry = "pnsd.demo:echo"
workers = 2
queue = 256
'''


@dataclass
class Ledger:
    acked: dict[str, tuple[str, Any]] = field(default_factory=dict)   # job -> (pts, input)
    seen: dict[str, Any] = field(default_factory=dict)     # results read before the kill
    interrupted: set[str] = field(default_factory=set)   # failed: daemon restarted
    requeued: set[str] = field(default_factory=set)      # queued at the kill: run again
    unacked: int = 0
    sent: int = 0


def pnsd_kill(ctx: Context) -> Row:
    tries = ctx.pick(3, 1)
    row = Row("pnsd-kill", tries=tries)
    node = Node(ctx.dir, "home", pts=WORKER_ECHO)
    ledger = Ledger()
    try:
        node.start_daemon()
        for attempt in range(tries):
            asyncio.run(_load_then_kill(node, ledger, seconds=ctx.pick(2, 1) + attempt * 0.5))
            node.start_daemon()
            asyncio.run(_check(node, ledger, row))
            asyncio.run(_new_jobs(node, row, attempt))
    finally:
        node.stop()
    row.sent += ledger.sent
    row.expected = len(ledger.interrupted)
    row.note(f"{len(ledger.acked)} submissions acknowledged, {ledger.unacked} in flight at a "
             f"kill (unacknowledged), {len(ledger.seen)} results read before a kill, "
             f"{len(ledger.requeued)} queued at a kill and run after it")
    return row


def _input(rng: random.Random, n: int) -> tuple[str, Any]:
    roll = rng.random()
    if roll < 0.05:
        return "sleep", {"seconds": 30}
    if roll < 0.15:
        return "echo", {"n": n, "big": os.urandom(100_000)}     # stored as a file
    if roll < 0.35:
        return "echo-w", {"n": n, "blob": os.urandom(256), "text": "é" * 10}
    return "echo", {"n": n, "blob": os.urandom(256), "list": [1, 2.5, None, True]}


async def _load_then_kill(node: Node, ledger: Ledger, *, seconds: float) -> None:
    """Submit and collect for ``seconds``, SIGKILL pnsd under the load, then stop the load."""
    rng = random.Random(len(ledger.acked))
    stop = asyncio.Event()
    client = node.async_client(timeout=2.0)

    async def submitter() -> None:
        while not stop.is_set():
            pts, data = _input(rng, len(ledger.acked) + ledger.unacked)
            ledger.sent += 1
            try:
                reply = await client.call("submit", {"pts": pts, "input": data})
            except PnsError:
                ledger.unacked += 1
                continue
            ledger.acked[reply["job"]["id"]] = (pts, data)

    async def collector() -> None:
        while not stop.is_set():
            done = [j for j, (pts, _) in ledger.acked.items()
                    if pts != "sleep" and j not in ledger.seen]
            if not done:
                await asyncio.sleep(0.01)
                continue
            job = rng.choice(done)
            ledger.sent += 1
            try:
                reply = await client.call("job.result", {"job": job})
            except PnsError:
                continue    # not ready yet, or the daemon is gone
            ledger.seen[job] = reply["result"]

    tasks = [asyncio.create_task(submitter()) for _ in range(6)]
    tasks.append(asyncio.create_task(collector()))
    await asyncio.sleep(seconds)
    assert node.daemon is not None
    await asyncio.to_thread(node.daemon.kill_hard)     # while submissions are in flight
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.close()


async def _check(node: Node, ledger: Ledger, row: Row) -> None:
    async with node.async_client(timeout=30.0) as client:
        for job, (pts, data) in ledger.acked.items():
            ledger.sent += 1
            try:
                record = (await client.call("job.status", {"job": job}))["job"]
            except RemoteError as exc:
                row.lose(f"job {job} ({pts}) acknowledged, then {exc.code}: {exc.message}")
                continue
            status = record["status"]
            if pts == "sleep" and job in ledger.requeued:
                continue        # dismissed by an earlier check (it had run again)
            if status == "successful":
                await _compare(client, job, data, ledger, row)
            elif status == "failed" and record["reason"] == RESTART_REASON:
                if job in ledger.seen:
                    row.lose(f"job {job}: its result was read, then it became failed "
                             f"({RESTART_REASON})")
                ledger.interrupted.add(job)
            elif status in ("accepted", "running"):
                await _requeued(client, job, (pts, data), ledger, row)
            else:
                row.lose(f"job {job} ({pts}) ended {status}: {record['reason']} "
                         f"{record['message']}")


async def _requeued(client: AsyncClient, job: str, run: tuple[str, Any], ledger: Ledger,
                    row: Row) -> None:
    """A job queued at the kill runs after the restart: an echo to its end, a sleep dismissed."""
    pts, data = run
    if job in ledger.requeued:
        return
    ledger.requeued.add(job)
    if pts == "sleep":
        await client.call("job.cancel", {"job": job})
        return
    try:
        await _wait_result(client, job)
    except RemoteError as exc:
        row.lose(f"job {job} ({pts}) queued at the kill, then {exc.code}: {exc.message}")
        return
    await _compare(client, job, data, ledger, row)


async def _compare(client: AsyncClient, job: str, data: Any, ledger: Ledger, row: Row) -> None:
    ledger.sent += 1
    try:
        result = (await client.call("job.result", {"job": job}))["result"]
    except RemoteError as exc:
        row.lose(f"job {job} successful but its result is {exc.code}: {exc.message}")
        return
    want = msgpack.packb(data, use_bin_type=True)
    if msgpack.packb(result, use_bin_type=True) != want:
        row.lose(f"job {job}: the result after the restart differs from its input")
    if job in ledger.seen and msgpack.packb(ledger.seen[job], use_bin_type=True) != want:
        row.lose(f"job {job}: the result read before the kill differs from its input")


async def _new_jobs(node: Node, row: Row, attempt: int) -> None:
    async with node.async_client(timeout=30.0) as client:
        for index in range(20):
            pts = ("echo", "echo-w")[index % 2]
            data = {"after": attempt, "i": index}
            row.sent += 2
            try:
                job = (await client.call("submit", {"pts": pts, "input": data}))["job"]["id"]
                result = await _wait_result(client, job)
            except PnsError as exc:
                row.fail(f"a new {pts} job after restart {attempt}: {exc}")
                continue
            if result != data:
                row.fail(f"a new {pts} job after restart {attempt} returned {result!r}")


async def _wait_result(client: AsyncClient, job: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return (await client.call("job.result", {"job": job}))["result"]
        except RemoteError as exc:
            if exc.code != ErrorCode.NOT_READY or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.02)   # polling is how a client collects an async job
