"""Fault 4: pnsweb restarted (SIGTERM, then SIGKILL) under load.

Clients run ``echo`` through ``/v1`` (synchronous executions, and asynchronous ones whose job
ids they keep) while pnsweb is stopped and started again on the same port. A client retries a
request that meets a connection error, or a 503 with ``Retry-After``: those are the only
failures the restart window may show (counted as expected); any other status, a 503 without
``Retry-After``, or a request still failing after its deadline counts as should-not-fail.
After the restart every request must succeed at the first attempt, and every async job
acknowledged (201) before or during the restart must still give its result.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from faults.procs import WEB_USER, Node
from faults.report import Row
from faults.runner import Context

REQUEST_DEADLINE = 30.0     # a retried request must have succeeded by then
AUTH = aiohttp.BasicAuth(*WEB_USER)


@dataclass
class Traffic:
    jobs: dict[str, Any] = field(default_factory=dict)     # async job id -> value
    sent: int = 0
    retried: int = 0
    latencies: list[float] = field(default_factory=list)


class Unexpected(Exception):
    """A reply a client must not see, even while pnsweb restarts."""


async def call(session: aiohttp.ClientSession, url: str, value: Any, *, asynchronous: bool,
               traffic: Traffic, retry: bool) -> Any:
    """One echo execution, retried on connection errors and 503 + Retry-After if ``retry``."""
    headers = {"Prefer": "respond-async"} if asynchronous else {}
    deadline = time.monotonic() + REQUEST_DEADLINE
    body = {"inputs": value}     # echo takes any inputs: its result is this map
    while True:
        traffic.sent += 1
        started = time.monotonic()
        try:
            async with session.post(f"{url}/v1/processes/echo/execution", json=body,
                                    headers=headers, auth=AUTH) as reply:
                payload = await reply.read()
                status, retry_after = reply.status, reply.headers.get("Retry-After")
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            if not retry or time.monotonic() > deadline:
                raise Unexpected(f"connection error {type(exc).__name__}") from exc
            traffic.retried += 1
            await asyncio.sleep(0.05)   # the restart takes a moment
            continue
        if status == 503 and retry_after is not None and retry and time.monotonic() < deadline:
            traffic.retried += 1
            await asyncio.sleep(min(float(retry_after), 0.5))   # honoured, capped for the test
            continue
        if status not in (200, 201):
            raise Unexpected(f"HTTP {status} (Retry-After {retry_after}): {payload[:200]!r}")
        traffic.latencies.append(time.monotonic() - started)
        return status, json.loads(payload)


async def _client(session: aiohttp.ClientSession, url: str, n: int, *, stop: asyncio.Event,
                  traffic: Traffic, row: Row, retry: bool) -> None:
    index = 0
    while not stop.is_set():
        index += 1
        value = {"client": n, "i": index, "token": os.urandom(8).hex()}
        asynchronous = index % 5 == 0
        try:
            _, body = await call(session, url, value, asynchronous=asynchronous,
                                      traffic=traffic, retry=retry)
        except Unexpected as exc:
            row.fail(str(exc))
            continue
        if asynchronous:
            traffic.jobs[body["jobID"]] = value
        elif body != value:
            row.fail(f"echo returned {body!r} for {value!r}")


async def _phase(url: str, seconds: float, traffic: Traffic, row: Row, *, retry: bool,
                 during: Any = None) -> None:
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=16, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(_client(session, url, n, stop=stop, traffic=traffic,
                                             row=row, retry=retry)) for n in range(8)]
        await asyncio.sleep(seconds / 2)
        if during is not None:
            await asyncio.to_thread(during)
        await asyncio.sleep(seconds / 2)
        stop.set()
        await asyncio.gather(*tasks)


async def _collect(url: str, traffic: Traffic, row: Row) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for job, value in traffic.jobs.items():
            deadline = time.monotonic() + 30
            while True:
                row.sent += 1
                async with session.get(f"{url}/v1/jobs/{job}/results", auth=AUTH) as reply:
                    status, payload = reply.status, await reply.read()
                if status != 404 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)   # result-not-ready: poll, as a client does
            if status != 200:
                row.lose(f"job {job} acknowledged, results answer {status}: {payload[:120]!r}")
            elif json.loads(payload) != {"result": value}:
                row.lose(f"job {job}: results differ from the input")


def web_restart(ctx: Context) -> Row:
    modes = ["SIGTERM", "SIGKILL"][: ctx.pick(2, 1)]
    row = Row("web-restart", tries=len(modes))
    node = Node(ctx.dir, "home")
    traffic = Traffic()
    try:
        node.start_daemon()
        node.start_web()
        for mode in modes:
            def restart(mode: str = mode) -> None:
                assert node.web is not None
                if mode == "SIGKILL":
                    node.web.kill_hard()
                else:
                    node.web.stop(grace=10.0)
                node.start_web(node.web_port)
            asyncio.run(_phase(node.url, ctx.pick(4, 2), traffic, row, retry=True,
                               during=restart))
        row.expected = traffic.retried
        during_sent = traffic.sent
        after = Traffic()
        asyncio.run(_phase(node.url, ctx.pick(3, 1), after, row, retry=False))
        traffic.jobs.update(after.jobs)
        asyncio.run(_collect(node.url, traffic, row))
        row.sent += during_sent + after.sent
        lat = sorted(after.latencies)
        if lat:
            p50, p99 = lat[len(lat) // 2] * 1000, lat[int(len(lat) * .99)] * 1000
            row.note(f"after the restarts: {len(lat)} requests, p50 {p50:.1f} ms, "
                     f"p99 {p99:.1f} ms")
        row.note(f"{traffic.retried} retries (connection error or 503 + Retry-After) during "
                 f"{len(modes)} restart(s); {len(traffic.jobs)} async jobs collected afterwards")
    finally:
        node.stop()
    return row
