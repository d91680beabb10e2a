"""The asynchronous jobs load: submit every input, then collect every result; in the agent.

Owns the ``jobs`` command (see :mod:`bench.loads` for the shape of a command and its answer):
submissions with ``busy`` retried, results polled until ready, both phases ``inflight`` wide
and bounded by ``count`` and ``seconds``, against pnsd (``AsyncClient``) or the bare jobs
baseline (:mod:`bench.bare_wire`). It must not start services or judge the figures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.bare_wire import BareAsyncClient
from protocols.client import AsyncClient
from protocols.errors import ErrorCode, PnsError, RemoteError


def jobs(cmd: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_jobs(cmd))


async def _jobs(cmd: dict[str, Any]) -> dict[str, Any]:
    count, inflight = cmd["count"], cmd["inflight"]
    inputs = [{"x": i, "name": "stranger"} for i in range(count)]
    ids: list[Any] = [None] * count
    submit, result, close = _job_ops(cmd)
    busy = [0]
    errors: list[str] = []
    try:
        started = time.perf_counter()
        await _each(count, inflight, lambda i: _retry_busy(
            lambda: submit(inputs[i]), busy, lambda job: ids.__setitem__(i, job), errors),
            cmd["seconds"])
        submitted = time.perf_counter()
        got: list[Any] = [None] * count
        missing = [0]

        async def collect(i: int) -> None:
            if ids[i] is None:
                missing[0] += 1
                return
            for _ in range(200):
                value = await result(ids[i])
                if value is not _NOT_READY:
                    got[i] = value
                    return
                await asyncio.sleep(0.005)
            missing[0] += 1

        await _each(count, inflight, collect, cmd["seconds"])
        finished = time.perf_counter()
    finally:
        await close()
    wrong = sum(1 for i in range(count) if ids[i] is not None and got[i] != inputs[i])
    end = time.time()
    return {"window": [end - (finished - started), end], "count": count,
            "submitted": sum(j is not None for j in ids), "busy": busy[0],
            "missing": missing[0], "wrong": wrong - missing[0], "errors": len(errors),
            "error": errors[0] if errors else "",
            "submit_s": submitted - started, "collect_s": finished - submitted,
            "elapsed": finished - started, "rate": count / (finished - started)}


_NOT_READY = object()


def _job_ops(cmd: dict[str, Any]) -> tuple[Any, Any, Any]:
    if cmd["target"] == "bare":
        bare = BareAsyncClient(cmd["endpoint"])

        async def bare_submit(value: Any) -> Any:
            return (await bare.call(["submit", value]))[0]

        async def bare_result(job: Any) -> Any:
            value = (await bare.call(["result", job]))[0]
            return _NOT_READY if value is None else value

        async def bare_close() -> None:
            bare.close()

        return bare_submit, bare_result, bare_close
    client = AsyncClient(cmd["endpoint"], key=bytes.fromhex(cmd["key"]), timeout=30.0)

    async def pns_submit(value: Any) -> Any:
        return (await client.call("submit", {"pts": cmd["pts"], "input": value}))["job"]["id"]

    async def pns_result(job: Any) -> Any:
        try:
            return (await client.call("job.result", {"job": job}))["result"]
        except RemoteError as exc:
            if exc.code == ErrorCode.NOT_READY:
                return _NOT_READY
            raise

    return pns_submit, pns_result, client.close


async def _retry_busy(call: Callable[[], Awaitable[Any]], busy: list[int],
                      keep: Callable[[Any], Any], errors: list[str]) -> None:
    for _ in range(100):
        try:
            keep(await call())
            return
        except RemoteError as exc:
            if exc.code != ErrorCode.BUSY:
                errors.append(f"{exc.code}: {exc}")
                return
            busy[0] += 1
            await asyncio.sleep(0.01)
        except (PnsError, TimeoutError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            return


async def _each(count: int, inflight: int, work: Callable[[int], Awaitable[None]],
                seconds: float) -> None:
    index = iter(range(count))
    deadline = time.perf_counter() + seconds

    async def lane() -> None:
        for i in index:
            if time.perf_counter() > deadline:
                return
            await work(i)

    await asyncio.gather(*(lane() for _ in range(inflight)))
