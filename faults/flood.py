"""Fault 9: a flood of forged and captured messages while a good client pings and runs echo.

Four processes, one DEALER each, send as fast as they can for a few seconds: unsigned
messages, messages signed with another key, stale ones (signed with the key, an hour old) and
copies of one captured good request. Meanwhile a good client pings in a loop and runs ``echo``
with values it checks. The row fails if a good call fails, if the good client's ping latency
exceeds LATENCY_BOUND, if the daemon's log grows by more than LOG_BOUND bytes per second of
flood, or if the daemon did not count every forged message as refused by the right code
(nothing lost; the counts also reach pnsweb's ``/metrics``). It reports the latency before and
during the flood, log bytes per second and the daemon's CPU per refused message.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import zmq

from faults.procs import Node
from faults.report import Row
from faults.runner import Context
from harness.procs import cpu_seconds
from protocols.codec import Codec
from protocols.errors import PnsError
from protocols.version import MAGIC

KINDS = ("unsigned", "other key", "stale", "replayed")
LATENCY_BOUND = 1.0      # seconds: the slowest good ping allowed during the flood
LOG_BOUND = 20_000       # bytes of daemon log per second of flood
POOL = 512               # distinct forged messages per sender, sent in turn


def forge(kind: str, key: bytes) -> list[list[bytes]]:
    """The messages one sender cycles through (``replayed``: one captured good request)."""
    if kind == "replayed":
        return [Codec(key).encode("ping.req", {})]
    if kind == "unsigned":
        return [[MAGIC, b"", *Codec(b"").encode("ping.req", {"n": n})[2:]] for n in range(POOL)]
    if kind == "other key":
        codec = Codec(os.urandom(32).hex().encode())
        return [codec.encode("ping.req", {"n": n}) for n in range(POOL)]
    stale = time.time() - 3600
    return [Codec(key).encode("ping.req", {"n": n}, ts=stale) for n in range(POOL)]


def send_flood(endpoint: str, key: bytes, kind: str, seconds: float) -> int:
    """In a process of its own: send ``kind`` messages for ``seconds``; how many were sent."""
    messages = forge(kind, key)
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 30_000)     # what was sent reaches the daemon
    sock.setsockopt(zmq.RCVHWM, 1000)       # answers are not read: at most this many kept
    sock.connect(endpoint)
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for _ in range(64):
                sock.send_multipart(messages[sent % len(messages)])
                sent += 1
    finally:
        sock.close()
        context.term()
    return sent


def flood(ctx: Context) -> Row:
    row = Row("flood", tries=1)
    node = Node(ctx.dir, "home")
    try:
        node.start_daemon()
        node.start_web()
        asyncio.run(_attack(node, ctx.pick(5, 2), row))
        if node.daemon is None or not node.daemon.alive():
            row.fail("pnsd died during the flood")
        elif not node.pingable():
            row.fail("pnsd no longer answers a ping after the flood")
    finally:
        node.stop()
    return row


async def _attack(node: Node, seconds: float, row: Row) -> None:
    assert node.daemon is not None
    quiet = await _good_client(node, asyncio.sleep(1.0), row)
    log = node.daemon.log
    before = (log.stat().st_size, cpu_seconds(node.daemon.pid), await _refused(node))
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(len(KINDS), mp_context=get_context("spawn")) as pool:
        floods = [loop.run_in_executor(pool, send_flood, node.endpoint, node.key, kind, seconds)
                  for kind in KINDS]
        during = await _good_client(node, asyncio.gather(*floods), row)
        sent = dict(zip(KINDS, [f.result() for f in floods], strict=True))
    refused = await _wait_counted(node, before[2], sent)
    after = (log.stat().st_size, cpu_seconds(node.daemon.pid))
    total = sum(sent.values())
    row.sent += total
    row.expected = sum(refused.values())
    _judge(row, sent, refused, quiet, during)
    log_rate = (after[0] - before[0]) / seconds
    cpu = (after[1] - before[1]) / max(1, row.expected)
    row.note(f"flood: {total} messages in {seconds:g} s ({total / seconds:.0f}/s), "
             + ", ".join(f"{k} {n}" for k, n in sent.items()))
    row.note(f"daemon log: {log_rate:.0f} bytes per second of flood; "
             f"daemon CPU {cpu * 1e6:.1f} us per refused message")
    if log_rate > LOG_BOUND:
        row.fail(f"the daemon's log grew {log_rate:.0f} bytes/s (bound {LOG_BOUND})")
    _check_metrics(node, refused, row)


async def _good_client(node: Node, until: Any, row: Row) -> list[float]:
    """Ping (latency measured) and run echo (result checked) until ``until`` completes."""
    latencies: list[float] = []
    done = asyncio.ensure_future(until)
    async with node.async_client(timeout=30.0) as client:
        while not done.done():
            started = time.monotonic()
            try:
                await client.call("ping", {})
                latencies.append(time.monotonic() - started)
                value = {"n": len(latencies)}
                reply = await client.call("run", {"pts": "echo", "input": value})
                if reply["result"] != value:
                    row.fail("echo returned something else")
            except PnsError as exc:
                row.fail(f"good client: {type(exc).__name__}: {exc}")
            row.sent += 2
    await done
    return latencies


async def _refused(node: Node) -> dict[str, int]:
    async with node.async_client(timeout=30.0) as client:
        status = await client.call("status", {})
    return dict((status.get("refusals") or {}).get("refused") or {})


async def _wait_counted(node: Node, before: dict[str, int], sent: dict[str, int],
                        timeout: float = 60.0) -> dict[str, int]:
    """The refusals the flood caused, once the daemon has read everything sent (or timeout)."""
    want = sum(sent.values()) - 1          # the first copy of the captured request is served
    deadline = time.monotonic() + timeout
    while True:
        now = await _refused(node)
        refused = {code: now.get(code, 0) - before.get(code, 0) for code in now}
        if sum(refused.values()) >= want or time.monotonic() > deadline:
            return refused
        await asyncio.sleep(0.2)   # polling another process's counters


def _judge(row: Row, sent: dict[str, int], refused: dict[str, int], quiet: list[float],
           during: list[float]) -> None:
    auth = sent["unsigned"] + sent["other key"]
    replay = sent["stale"] + sent["replayed"] - 1
    if refused.get("auth", 0) != auth or refused.get("replay", 0) != replay:
        row.lose(f"refusals counted {refused}, expected auth {auth}, replay {replay}")
    row.note(f"good ping latency before the flood: {_summary(quiet)}; during: {_summary(during)}")
    if not during:
        row.fail("the good client got no ping through during the flood")
    elif max(during) > LATENCY_BOUND:
        row.fail(f"a good ping took {max(during):.2f} s during the flood "
                 f"(bound {LATENCY_BOUND:g} s)")


def _summary(latencies: list[float]) -> str:
    if not latencies:
        return "none"
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"{len(ordered)} pings, median {statistics.median(ordered) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms")


def _check_metrics(node: Node, refused: dict[str, int], row: Row) -> None:
    with urllib.request.urlopen(f"{node.url}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    for code, count in refused.items():
        line = f'pns_protocol_refused_total{{reason="{code}"}} '
        found = [int(s.split()[-1]) for s in text.splitlines() if s.startswith(line)]
        if not found or found[0] < count:
            row.fail(f"/metrics: {line.strip()} is {found or 'absent'}, expected >= {count}")
