"""Part 3: the memory and leak soak - echo runs over direct ZeroMQ and over HTTP ``/v1``.

Both paths run at once (16 requests in flight each; the direct path is held back so both
progress together), ``--soak-requests`` each. About every 5 % of the way pnsd's and pnsweb's
RSS (``/proc/PID/status`` VmRSS), open file descriptors and live child processes are sampled.
After a warm-up (a quarter of the requests, and at least 20,000 through pnsd or half of them:
SQLite's page cache, 2 MB, fills with the job records of sync runs for about as long) the RSS
growth is the least-squares slope over requests served by that process (pnsd serves both
paths), reported per 10,000 requests;
the soak fails if it extrapolates to more than 1 MB per 100,000 requests (judged from 100,000
requests per path on, as ``make soak`` runs it: over the 20,000 of ``make faults`` a single
allocator step reads as growth, so there it is only reported), or if descriptors or child
processes at the end exceed what they were after the warm-up.

The daemon's replay window (``max_clock_skew``) is 5 s here instead of 60 s: the replay guard
remembers every message id for one to two windows, memory that grows with the request rate
until the window turns over. It is bounded, not a leak, but with the default window a soak of
a few minutes would be all warm-up. The samples are printed in the row's notes.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass

import aiohttp

from faults.procs import WEB_USER, Node, sample
from faults.report import Row
from faults.runner import Context

IN_FLIGHT = 16
WARM_UP = 20_000        # requests through pnsd: its SQLite page cache (2 MB) fills with records
JUDGED_FROM = 100_000   # web requests from which RSS growth is judged, not only reported
LIMIT_KB_PER_100K = 1024.0
SKEW = 5


@dataclass
class Sample:
    direct: int
    web: int
    seconds: float
    pnsd: dict[str, int]
    pnsweb: dict[str, int]


class Load:
    def __init__(self, node: Node, total: int, row: Row) -> None:
        self.node = node
        self.total = total
        self.row = row
        self.direct = 0
        self.web = 0
        self.failures: list[str] = []
        self.lead = max(200, total // 20)   # how far the direct path may run ahead

    async def run_direct(self) -> None:
        async with self.node.async_client(timeout=30.0) as client:

            async def loop() -> None:
                while self.direct < self.total:
                    if self.direct > self.web + self.lead and self.web < self.total:
                        await asyncio.sleep(0.01)   # keep pace with the web path
                        continue
                    self.direct += 1
                    value = {"d": self.direct, "b": os.urandom(32)}
                    try:
                        reply = await client.call("run", {"pts": "echo", "input": value})
                        if reply["result"] != value:
                            self.failures.append("direct echo returned something else")
                    except Exception as exc:  # counted, never hidden
                        self.failures.append(f"direct: {type(exc).__name__}: {exc}")

            await asyncio.gather(*(loop() for _ in range(IN_FLIGHT)))

    async def run_web(self) -> None:
        auth = aiohttp.BasicAuth(*WEB_USER)
        connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
        url = f"{self.node.url}/v1/processes/echo/execution"
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def loop() -> None:
                while self.web < self.total:
                    self.web += 1
                    value = {"w": self.web}
                    try:
                        async with session.post(url, json={"inputs": value},
                                                auth=auth) as reply:
                            body = await reply.read()
                        if reply.status != 200 or json.loads(body) != value:
                            self.failures.append(f"web: HTTP {reply.status} {body[:80]!r}")
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        self.failures.append(f"web: {type(exc).__name__}: {exc}")

            await asyncio.gather(*(loop() for _ in range(IN_FLIGHT)))

    async def sampler(self, samples: list[Sample], every: int, done: asyncio.Event) -> None:
        assert self.node.daemon is not None and self.node.web is not None
        started = time.monotonic()
        step = 0
        while True:
            served = self.direct + self.web
            if served >= step * every or done.is_set():
                samples.append(Sample(self.direct, self.web, time.monotonic() - started,
                                      sample(self.node.daemon.pid),
                                      sample(self.node.web.pid, tree=True)))
                step = served // every + 1
            if done.is_set():
                return
            await asyncio.sleep(0.02)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if not var:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


async def _soak(node: Node, total: int, row: Row) -> list[Sample]:
    load = Load(node, total, row)
    samples: list[Sample] = []
    done = asyncio.Event()
    sampler = asyncio.create_task(load.sampler(samples, max(500, total * 2 // 20), done))
    await asyncio.gather(load.run_direct(), load.run_web())
    done.set()
    await sampler
    row.sent = load.direct + load.web
    for text in load.failures[:3]:
        row.fail(text, count=0)
    row.failed += len(load.failures)
    return samples


def _judge(row: Row, samples: list[Sample]) -> None:
    total = samples[-1].direct + samples[-1].web
    warm = [s for s in samples if s.direct + s.web >= max(total / 4, min(WARM_UP, total / 2))]
    if len(warm) < 3:
        row.broken = "too few samples after the warm-up"
        return
    for name, web_only in (("pnsd", False), ("pnsweb", True)):
        points = [(float(s.web if web_only else s.direct + s.web),
                   float(getattr(s, name)["rss_kb"])) for s in warm]
        per_10k = slope(points) * 10_000
        first, last = getattr(warm[0], name), getattr(warm[-1], name)
        row.note(f"{name}: RSS {first['rss_kb'] / 1024:.1f} -> {last['rss_kb'] / 1024:.1f} MB "
                 f"after the warm-up, growth {per_10k:+.1f} KB per 10,000 requests "
                 f"({per_10k * 10 / 1024:+.2f} MB per 100,000; limit 1 MB); fds "
                 f"{first['fds']} -> {last['fds']}, children {first['children']} -> "
                 f"{last['children']}")
        if per_10k * 10 > LIMIT_KB_PER_100K and samples[-1].web < JUDGED_FROM:
            row.note(f"{name}: too few requests to tell growth from warm-up; not judged")
        elif per_10k * 10 > LIMIT_KB_PER_100K:
            row.fail(f"{name} RSS grows {per_10k * 10 / 1024:.2f} MB per 100,000 requests",
                     count=0)
            row.broken = row.broken or "RSS growth over the limit"
        for key in ("fds", "children"):
            if last[key] > first[key]:
                row.fail(f"{name} {key} grew from {first[key]} to {last[key]}", count=0)
                row.broken = row.broken or f"{name} {key} grew"


def soak(ctx: Context) -> Row:
    total = ctx.soak_requests
    row = Row("soak", tries=1)
    node = Node(ctx.dir, "home", pnsd=f"max_clock_skew = {SKEW}")
    try:
        node.start_daemon()
        node.start_web()
        samples = asyncio.run(_soak(node, total, row))
        row.note(f"{total} echo runs per path; samples (requests direct/web, s, "
                 "pnsd RSS MB/fds/children, pnsweb RSS MB/fds/children):")
        for s in samples:
            row.note(f"  {s.direct:7d} {s.web:7d} {s.seconds:7.1f}  pnsd "
                     f"{s.pnsd['rss_kb'] / 1024:6.1f} {s.pnsd['fds']:3d} {s.pnsd['children']:2d}"
                     f"  pnsweb {s.pnsweb['rss_kb'] / 1024:6.1f} {s.pnsweb['fds']:3d} "
                     f"{s.pnsweb['children']:2d}")
        _judge(row, samples)
    finally:
        node.stop()
    return row
