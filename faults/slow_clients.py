"""Fault 8: slow clients (slowloris-style, bounded) while other clients keep being served.

Fifty sockets (twenty with ``--quick``) open a request to pnsweb and trickle header lines, one
every half second, never finishing, for twenty seconds (five with ``--quick``). Meanwhile good
clients run ``echo`` through ``/v1``: every one must succeed, and their latency is reported
beside the latency measured before the slow clients came. Afterwards pnsweb's open file
descriptors must be back where they were (no socket kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from faults.goodload import EXECUTE, GoodLoad
from faults.procs import Node
from faults.report import Row
from faults.runner import Context
from harness.procs import fd_count

TRICKLE = 0.5      # seconds between header lines of a slow client


async def _slow(port: int, stop: asyncio.Event, closed: list[int]) -> int:
    """One slow client; returns how many header lines it sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = 0
    try:
        writer.write(f"POST {EXECUTE} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        while not stop.is_set():
            writer.write(f"X-Slow-{sent}: {'z' * 10}\r\n".encode())
            await writer.drain()
            sent += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TRICKLE)
            if reader.at_eof():
                closed.append(1)     # the server gave up on us
                break
    except ConnectionError:
        closed.append(1)
    finally:
        writer.close()
    return sent


async def _phase(node: Node, seconds: float, slow: int) -> tuple[list[float], list[str], int,
                                                                  list[int], int | None]:
    stop = asyncio.Event()
    closed: list[int] = []
    slow_tasks = [asyncio.create_task(_slow(node.web_port, stop, closed)) for _ in range(slow)]
    await asyncio.sleep(0.2 if slow else 0)
    load = GoodLoad(node.url, loops=4)
    good = asyncio.create_task(load.run(stop))
    await asyncio.sleep(seconds)
    assert node.web is not None
    during_fds = fd_count(node.web.pid)
    stop.set()
    await good
    await asyncio.gather(*slow_tasks, return_exceptions=True)
    return load.latencies, load.failures, load.sent, closed, during_fds


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000 if ordered else 0.0


def slow_clients(ctx: Context) -> Row:
    slow, seconds = ctx.pick(50, 20), ctx.pick(20, 5)
    row = Row("slowloris", tries=1)
    node = Node(ctx.dir, "home")
    try:
        node.start_daemon()
        web = node.start_web()
        base_lat, base_fail, base_sent, _, _ = asyncio.run(_phase(node, 2.0, 0))
        fds_before = fd_count(web.pid)
        lat, fail, sent, closed, during = asyncio.run(_phase(node, seconds, slow))
        time.sleep(1.0)    # let the server notice the closed sockets
        fds_after = fd_count(web.pid)
        row.sent = base_sent + sent + slow
        row.expected = slow
        for text in (base_fail + fail)[:3]:
            row.fail(text, count=0)
        row.failed = len(base_fail) + len(fail)
        row.note(f"before: {base_sent} good requests, p50 {_p(base_lat, .5):.1f} ms, "
                 f"p99 {_p(base_lat, .99):.1f} ms")
        row.note(f"with {slow} slow clients for {seconds} s: {sent} good requests, "
                 f"{100 * (sent - len(fail)) / max(sent, 1):.1f} % succeeded, p50 "
                 f"{_p(lat, .5):.1f} ms, p99 {_p(lat, .99):.1f} ms, max {_p(lat, 1.0):.1f} ms; "
                 f"{len(closed)} slow clients cut off by the server")
        row.note(f"pnsweb fds: {fds_before} before, {during} during, {fds_after} after")
        if fds_before is not None and fds_after is not None and fds_after > fds_before + 2:
            row.fail(f"pnsweb kept {fds_after - fds_before} descriptors after the slow clients")
        if not web.alive():
            row.fail("pnsweb died")
    finally:
        node.stop()
    return row
