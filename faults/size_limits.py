"""Fault: messages at and over the size limit, via /v1 and via direct clients.

A node with a 1 MiB message limit and a process-mode PTS whose three output files make a 2.7 MB
result. Each round sends, beside a well-behaved /v1 client: a /v1 body over the limit, a /v1
body under it whose msgpack form grows past it (floats: about 2.25x) -- both uploaded to the
daemon in parts and run whole --, a request over the limit
from a direct client, a request from a direct client allowed more than the daemon (the daemon's
socket drops that connection), and runs whose result is over the limit (async then
``GET /v1/jobs/{id}/results``, sync /v1, direct ``result``). Every other over-size request must be
refused at once (413 / ``too_large``, or ``unavailable`` for the dropped connection, within
seconds), every large result must arrive whole (same bytes over /v1 and directly), and after
each the same link must serve good requests: pnsweb must never answer 503 for good.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp

from faults.goodload import GoodLoad
from faults.procs import WEB_USER, Node
from faults.report import Row
from faults.runner import Context
from protocols.client import AsyncClient
from protocols.errors import ErrorCode, RemoteError

LIMIT = 1 << 20
FILE_BYTES = 900_000
QUICK = 10.0            # seconds within which a refusal must come
BIG = """
[pts.big]
mode = "process"
dir = "bigpts"
run = ["runbig"]
outputs = ["a", "b", "c"]
timeout = 60
"""
SCRIPT = f"#!/bin/sh\nfor n in a b c; do head -c {FILE_BYTES} /dev/urandom > output/$n; done\n"


def size_limits(ctx: Context) -> Row:
    row = Row("size-limits", tries=ctx.pick(3, 1))
    node = Node(ctx.dir, "home", pnsd=f"max_message_bytes = {LIMIT}", pts=BIG)
    script = node.home / "bigpts" / "runbig"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(SCRIPT)
    script.chmod(0o755)
    try:
        node.start_daemon()
        node.start_web()
        asyncio.run(_rounds(node, row))
        if not node.pingable():
            row.fail("pnsd no longer answers a ping after the rounds")
    finally:
        node.stop()
    return row


async def _rounds(node: Node, row: Row) -> None:
    good = GoodLoad(node.url)
    stop = asyncio.Event()
    load = asyncio.create_task(good.run(stop))
    auth = aiohttp.BasicAuth(*WEB_USER)
    try:
        async with aiohttp.ClientSession(auth=auth, timeout=aiohttp.ClientTimeout(60)) as web, \
                AsyncClient(node.endpoint, key=node.key, max_bytes=LIMIT, timeout=60) as direct:
            for _ in range(row.tries):
                await _round(node, web, direct, row)
    finally:
        stop.set()
        await load
    row.sent += good.sent
    row.note(f"good client: {good.sent} /v1 echo runs alongside, {len(good.failures)} failed")
    for text in good.failures[:3]:
        row.fail(f"good client: {text}", count=0)
    row.failed += len(good.failures)


async def _round(node: Node, web: aiohttp.ClientSession, direct: AsyncClient,
                 row: Row) -> None:
    execute = f"{node.url}/v1/processes/echo/execution"
    # bodies whose input is over the message limit go to the daemon in parts and run whole
    for what, value in (("over-size body", "x" * (2 * LIMIT)),
                        ("msgpack-grown body", [0.5] * (LIMIT // 6))):
        await _runs_whole(row, what, web.post(execute, json={"inputs": {"value": value}}),
                          value)
        await _still_serves(node, web, direct, row)
    await _refused(row, "direct over-size request",
                   _code(direct.call("run", {"pts": "echo", "input": b"x" * 2 * LIMIT})),
                   ErrorCode.TOO_LARGE)
    async with AsyncClient(node.endpoint, key=node.key, max_bytes=16 * LIMIT,
                           timeout=60) as greedy:
        await _refused(row, "connection dropped by the daemon's socket",
                       _code(greedy.call("run", {"pts": "echo", "input": b"x" * 3 * LIMIT})),
                       ErrorCode.UNAVAILABLE)
        if (await greedy.call("run", {"pts": "echo", "input": 7}))["result"] != 7:
            row.fail("the dropped link did not come back")
    await _large_results(node, web, direct, row)
    await _still_serves(node, web, direct, row)


async def _large_results(node: Node, web: aiohttp.ClientSession, direct: AsyncClient,
                         row: Row) -> None:
    base = f"{node.url}/v1"
    async with web.post(f"{base}/processes/big/execution", json={"inputs": {}},
                        headers={"Prefer": "respond-async"}) as reply:
        job = (await reply.json())["jobID"]
    row.sent += 1
    events = [e async for e in direct.stream("job.watch", {"job": job}, timeout=60)]
    if events[-1].get("status") != "successful":
        row.lose(f"async big job {job} ended {events[-1].get('status')}")
        return
    stored = (await direct.result(job))["result"]["outputs"]
    async with web.get(f"{base}/jobs/{job}/results") as reply:
        document = await reply.json() if reply.status == 200 else None
    row.sent += 2
    if document is None or _files(document) != stored:
        row.lose(f"GET results of {job} differs from the stored result")
    async with web.post(f"{base}/processes/big/execution",
                        json={"inputs": {}, "response": "document"}) as reply:
        synced = await reply.json() if reply.status == 200 else None
    row.sent += 1
    if synced is None or {k: len(v) for k, v in _files(synced).items()} != dict.fromkeys(
            "abc", FILE_BYTES):
        row.fail(f"sync big run over /v1 did not stream its result ({reply.status})")


def _files(document: dict[str, Any]) -> dict[str, bytes]:
    return {name: base64.b64decode(value["value"]) for name, value in document.items()}


async def _runs_whole(row: Row, what: str, request: Any, value: Any) -> None:
    """A /v1 run whose input is over the message limit: answered 200 with the whole echo."""
    row.sent += 1
    try:
        async with request as reply:
            status, document = reply.status, await reply.json()
    except (aiohttp.ClientError, ValueError) as exc:
        row.fail(f"{what}: {exc!r}")
        return
    echoed = document.get("value") if isinstance(document, dict) else None
    if status != 200 or echoed != value:
        row.fail(f"{what}: {status}, the input not echoed whole")


async def _status(request: Any) -> int:
    async with request as reply:
        await reply.read()
        return int(reply.status)


async def _code(call: Any) -> str:
    try:
        await call
    except RemoteError as exc:
        return exc.code
    return "ok"


async def _refused(row: Row, what: str, attempt: Any, wanted: int | str) -> None:
    row.sent += 1
    started = time.monotonic()
    try:
        got = await asyncio.wait_for(attempt, QUICK)
    except TimeoutError:
        row.fail(f"{what}: no answer within {QUICK:g} s")
        return
    if got != wanted:
        row.fail(f"{what}: {got}, expected {wanted}")
        return
    row.expected += 1
    if time.monotonic() - started > QUICK:
        row.fail(f"{what}: refused only after {time.monotonic() - started:.1f} s")


async def _still_serves(node: Node, web: aiohttp.ClientSession, direct: AsyncClient,
                        row: Row) -> None:
    row.sent += 2
    async with web.get(f"{node.url}/v1/processes") as reply:
        if reply.status != 200:
            row.fail(f"pnsweb answers {reply.status} after an over-size message")
    try:
        await direct.call("ping", {})
    except RemoteError as exc:
        row.fail(f"the direct link is broken after an over-size message: {exc}")
