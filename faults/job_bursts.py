"""Fault 9: a burst of asynchronous submissions far beyond a PTS's slots and queue.

``nap`` (a sleep PTS of about a second, one slot, a queue of 8) gets waves of 120 concurrent
``Prefer: respond-async`` executions through ``/v1`` (40 with ``--quick``); a fifth of them
repeat one of a few ``Idempotency-Key`` values. Every submission must be answered at once
(within :data:`ANSWER` seconds, less than the queue takes to drain) with 201 or with 429 +
``Retry-After`` (expected: the queue is full); a 503, another status or a slow answer is
should-not-fail. Every 201 job must finish successfully with its own result, the daemon must
hold exactly the jobs that were answered 201 (a 429 stores nothing), and every 201 answer for
one key must name one job (lost otherwise).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from faults.procs import WEB_USER, Node
from faults.report import Row
from faults.runner import Context

ANSWER = 5.0        # seconds: an answer that waited for a slot would take longer
FINISH = 120.0      # seconds every accepted job gets to finish
NAP = """
[pts.nap]
mode = "inproc"
entry = "pnsd.demo:sleep"
version = "1"
concurrency = 1
queue = 8
"""
AUTH = aiohttp.BasicAuth(*WEB_USER)


@dataclass
class Burst:
    accepted: dict[str, float] = field(default_factory=dict)      # job id -> seconds slept
    keyed: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    refused: int = 0


async def _one(session: aiohttp.ClientSession, url: str, n: int, burst: Burst,
               row: Row) -> None:
    seconds = round(1.0 + (n % 7) / 10, 1)
    headers = {"Prefer": "respond-async"}
    key = f"wave-key-{n % 4}" if n % 5 == 0 else None
    if key is not None:
        headers["Idempotency-Key"] = key
    started = time.monotonic()
    try:
        async with asyncio.timeout(ANSWER), session.post(
                f"{url}/v1/processes/nap/execution", json={"inputs": {"seconds": seconds}},
                headers=headers, auth=AUTH) as reply:
            status, body = reply.status, await reply.read()
            retry_after = reply.headers.get("Retry-After")
    except (aiohttp.ClientError, TimeoutError) as exc:
        row.fail(f"no answer within {ANSWER} s ({type(exc).__name__}) after "
                 f"{time.monotonic() - started:.1f} s")
        return
    if status == 201:
        job = json.loads(body)["jobID"]
        if key is None:
            burst.accepted[job] = seconds
        else:
            burst.keyed[key].add(job)
            burst.accepted.setdefault(job, -1.0)     # its input is the first submission's
    elif status == 429 and retry_after is not None:
        burst.refused += 1
    else:
        row.fail(f"HTTP {status} (Retry-After {retry_after}): {body[:160]!r}")


async def _finished(session: aiohttp.ClientSession, url: str, job: str,
                    seconds: float, row: Row) -> None:
    deadline = time.monotonic() + FINISH
    while True:
        async with session.get(f"{url}/v1/jobs/{job}/results", auth=AUTH) as reply:
            status, body = reply.status, await reply.read()
        if status != 404 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)    # result-not-ready: poll, as a client does
    if status != 200:
        row.lose(f"job {job} answered 201, its results answer {status}: {body[:120]!r}")
        return
    result = json.loads(body).get("result", {})
    if seconds >= 0 and result != {"slept": seconds}:
        row.lose(f"job {job} gave {result!r}, not {{'slept': {seconds}}}")


async def _wave(url: str, count: int, row: Row) -> Burst:
    burst = Burst()
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=FINISH)) as session:
        await asyncio.gather(*(_one(session, url, n, burst, row) for n in range(count)))
        await asyncio.gather(*(_finished(session, url, job, seconds, row)
                               for job, seconds in burst.accepted.items()))
    return burst


def submit_burst(ctx: Context) -> Row:
    waves, count = ctx.pick(3, 1), ctx.pick(120, 40)
    row = Row("submit-burst", tries=waves)
    node = Node(ctx.dir, "home", pts=NAP)
    try:
        node.start_daemon()
        node.start_web()
        accepted: set[str] = set()
        keyed: dict[str, set[str]] = defaultdict(set)     # keys outlive a wave: so do jobs
        for _ in range(waves):
            burst = asyncio.run(_wave(node.url, count, row))
            row.sent += count
            row.expected += burst.refused
            accepted |= set(burst.accepted)
            for key, jobs in burst.keyed.items():
                keyed[key] |= jobs
        for key, jobs in keyed.items():
            if len(jobs) > 1:
                row.lose(f"Idempotency-Key {key} answered {len(jobs)} different jobs")
        _check_store(node, len(accepted), row)
        row.note(f"{len(accepted)} jobs answered 201, {row.expected} submissions answered 429")
        if node.web is None or not node.web.alive():
            row.fail("pnsweb died")
    finally:
        node.stop()
    return row


def _check_store(node: Node, accepted: int, row: Row) -> None:
    with node.client() as client:
        stored: dict[str, Any] = client.call("job.list", {"pts": "nap", "limit": 1000})
    if stored["total"] != accepted:
        row.lose(f"the daemon holds {stored['total']} nap jobs; {accepted} were answered 201")
    unfinished = [job["id"] for job in stored["jobs"] if job["status"] != "successful"]
    if unfinished:
        row.lose(f"{len(unfinished)} nap jobs not successful", count=len(unfinished))
