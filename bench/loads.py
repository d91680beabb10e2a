"""The loads a trial runs, each bounded by a count and a deadline; run in the agent process.

Every function takes one command (a dict from :mod:`bench.agent`) and returns plain data:
``ok``, ``errors``, ``busy``, ``elapsed``, ``rate`` (ok per second), latency ``p50``/``p99``
(seconds) and what else the load measures. Clients: PNS's own ``Client`` / ``AsyncClient``
for the daemon, :mod:`bench.bare_wire` for the bare baselines, :mod:`bench.httpload` for HTTP.
The asynchronous jobs load is :mod:`bench.jobload`'s.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import wrk
from bench.bare_wire import BareAsyncClient, BareClient
from bench.httpload import Tally, build_request, run_load
from bench.jobload import jobs
from protocols.client import AsyncClient, Client
from protocols.errors import ErrorCode, PnsError, RemoteError

SMALL = {"x": 1, "name": "stranger", "values": [1.5, 2.5, 3.5], "flag": True}  # ~60 bytes


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def outcome(tally: Tally, elapsed: float, **extra: Any) -> dict[str, Any]:
    """The figures of a timed phase that ended just now (``window``: its wall-clock span)."""
    end = time.time()
    return {"window": [end - elapsed, end], "ok": tally.ok, "errors": tally.errors,
            "busy": tally.busy, "elapsed": elapsed,
            "rate": tally.ok / elapsed if elapsed > 0 else 0.0,
            "p50": percentile(tally.latencies, 0.50), "p99": percentile(tally.latencies, 0.99),
            "error": tally.first_error, **extra}


# -- what one call is -------------------------------------------------------------------------

def _warm(cmd: dict[str, Any]) -> float:
    """The longest a warm-up may take (it is also bounded by its count)."""
    return float(cmd.get("warmup_seconds", 1.0))


def _payload(cmd: dict[str, Any]) -> Any:
    size = cmd.get("blob_size")
    return bytes(size) if size else cmd.get("input", SMALL)


def _check(sent: Any, got: Any) -> None:
    if isinstance(sent, bytes):
        got = bytes(got)
        if len(got) != len(sent):
            raise ValueError(f"echo returned {len(got)} bytes for {len(sent)}")
    elif cmd_result_differs(sent, got):
        raise ValueError(f"echo returned {str(got)[:80]!r}")


def cmd_result_differs(sent: Any, got: Any) -> bool:
    return isinstance(sent, dict) and "x" in sent and got != sent


def sync_caller(cmd: dict[str, Any]) -> tuple[Callable[[], Any], Callable[[], None]]:
    """A blocking one-call function for the command's target, and its closer."""
    payload = _payload(cmd)
    timeout = float(cmd.get("call_timeout", 30.0))
    if cmd["target"] == "bare":
        bare = BareClient(cmd["endpoint"])
        blobs = [payload] if isinstance(payload, bytes) else []
        body = None if blobs else payload

        def bare_call() -> Any:
            reply, frames = bare.call(body, blobs, timeout)
            return frames[0] if blobs else reply

        return bare_call, bare.close
    client = Client(cmd["endpoint"], key=bytes.fromhex(cmd["key"]), timeout=timeout)
    body = {"pts": cmd["pts"], "input": payload}
    if cmd.get("streamed"):     # over the message limit: input in parts, result in chunks
        return (lambda: client.run("run", body)["result"]), client.close
    return (lambda: client.call("run", body)["result"]), client.close


def async_caller(cmd: dict[str, Any]) -> tuple[Callable[[], Awaitable[Any]], Callable[[], Any]]:
    payload = _payload(cmd)
    timeout = float(cmd.get("call_timeout", 30.0))
    if cmd["target"] == "bare":
        bare = BareAsyncClient(cmd["endpoint"])
        blobs = [payload] if isinstance(payload, bytes) else []   # a frame of its own
        body = None if blobs else payload

        async def bare_call() -> Any:
            reply, frames = await bare.call(body, blobs, timeout)
            return frames[0] if blobs else reply

        async def bare_close() -> None:
            bare.close()

        return bare_call, bare_close
    client = AsyncClient(cmd["endpoint"], key=bytes.fromhex(cmd["key"]), timeout=timeout)
    body = {"pts": cmd["pts"], "input": payload}

    async def pns_call() -> Any:
        return (await client.call("run", body))["result"]

    return pns_call, client.close


def _count_failure(tally: Tally, exc: Exception) -> None:
    if isinstance(exc, RemoteError) and exc.code == ErrorCode.BUSY:
        tally.busy += 1
    else:
        tally.error(f"{type(exc).__name__}: {exc}")


# -- ZeroMQ loads -------------------------------------------------------------------------------

def zmq_seq(cmd: dict[str, Any]) -> dict[str, Any]:
    """One blocking client, one call at a time."""
    call, close = sync_caller(cmd)
    payload = _payload(cmd)
    checked = [False]

    def first_checked() -> Any:
        """The first call's answer is checked; with no warm-up it is a timed call."""
        if checked[0]:
            return call()
        result = call()
        _check(payload, result)
        checked[0] = True
        return result

    try:
        warmup = cmd.get("warmup", 50)
        if warmup:
            first_checked()    # correctness once, outside the clock
            _seq_phase(call, count=warmup, seconds=_warm(cmd), tally=Tally())
        tally = Tally()
        elapsed = _seq_phase(first_checked, count=cmd["count"], seconds=cmd["seconds"],
                             tally=tally)
    finally:
        close()
    if not checked[0] and not tally.errors:
        tally.error("no call completed")
    return outcome(tally, elapsed)


def _seq_phase(call: Callable[[], Any], *, count: int, seconds: float, tally: Tally) -> float:
    started = time.perf_counter()
    deadline = started + seconds
    for _ in range(count):
        t0 = time.perf_counter()
        if t0 > deadline:
            break
        try:
            call()
            tally.latencies.append(time.perf_counter() - t0)
            tally.ok += 1
        except (PnsError, TimeoutError, ValueError) as exc:
            _count_failure(tally, exc)
    return time.perf_counter() - started


def zmq_async(cmd: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_zmq_async(cmd))


async def _zmq_async(cmd: dict[str, Any]) -> dict[str, Any]:
    """``inflight`` tasks sharing one asyncio client, each calling in a loop."""
    call, close = async_caller(cmd)
    try:
        _check(_payload(cmd), await call())
        await async_phase(call, inflight=cmd["inflight"], count=cmd.get("warmup", 500),
                          seconds=_warm(cmd), tally=Tally())
        tally = Tally()
        elapsed = await async_phase(call, inflight=cmd["inflight"], count=cmd["count"],
                                    seconds=cmd["seconds"], tally=tally)
    finally:
        await close()
    return outcome(tally, elapsed)


async def async_phase(call: Callable[[], Awaitable[Any]], *, inflight: int, count: int,
                      seconds: float, tally: Tally,
                      stop: asyncio.Event | None = None) -> float:
    remaining = [count]
    started = time.perf_counter()
    deadline = started + seconds

    async def lane() -> None:
        while remaining[0] > 0:
            t0 = time.perf_counter()
            if t0 > deadline or (stop is not None and stop.is_set()):
                return
            remaining[0] -= 1
            try:
                await call()
                tally.latencies.append(time.perf_counter() - t0)
                tally.ok += 1
            except (PnsError, TimeoutError) as exc:
                _count_failure(tally, exc)
                if tally.errors > 100:
                    return

    await asyncio.gather(*(lane() for _ in range(inflight)))
    return time.perf_counter() - started


# -- spawning a process per request, without any server -------------------------------------

def spawn_floor(cmd: dict[str, Any]) -> dict[str, Any]:
    """What a run of the hello scripts costs with no server: dirs, infile, bash, outfile."""
    script, work = Path(cmd["script"]), Path(cmd["workdir"])
    serial = [0]

    def one() -> None:
        serial[0] += 1
        job = work / f"floor{serial[0]}"
        (job / "input").mkdir(parents=True)
        (job / "output").mkdir()
        (job / "input" / "infile").write_text("stranger")
        subprocess.run([str(script)], cwd=job, capture_output=True, check=True, timeout=10)
        if not (job / "output" / "outfile").read_text().startswith("hello stranger!"):
            raise ValueError("runPTS wrote no greeting")
        shutil.rmtree(job)

    _seq_phase(one, count=3, seconds=_warm(cmd), tally=Tally())
    tally = Tally()
    elapsed = _seq_phase(one, count=cmd["count"], seconds=cmd["seconds"], tally=tally)
    return outcome(tally, elapsed)


# -- HTTP --------------------------------------------------------------------------------------

def http(cmd: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_http(cmd))


def http_body(cmd: dict[str, Any]) -> bytes:
    if cmd.get("string_size"):
        value = "a" * cmd["string_size"]
        return json.dumps({"inputs": {"value": value}} if cmd.get("ogc") else value).encode()
    body = cmd.get("body")
    return b"" if body is None else json.dumps(body).encode()


async def _http(cmd: dict[str, Any]) -> dict[str, Any]:
    host, port = "127.0.0.1", cmd["port"]
    headers = {"Content-Type": "application/json"} if cmd["method"] == "POST" else {}
    if cmd.get("auth"):
        headers["Authorization"] = "Basic " + base64.b64encode(cmd["auth"].encode()).decode()
    body = http_body(cmd)
    request = build_request(cmd["method"], cmd["path"], host=f"{host}:{port}", body=body,
                            headers=headers)

    def ok(status: int) -> bool:
        return status == 200

    timeout = float(cmd.get("call_timeout", 30.0))
    warm = Tally()
    await run_load(host, port, request, conns=cmd["conns"], count=cmd.get("warmup", 200),
                   seconds=_warm(cmd), tally=warm, ok_status=ok, timeout=timeout)
    if cmd.get("wrk") and not cmd.get("string_size") and wrk.path():    # sizes: body checked
        return _wrk_phase(cmd, f"http://{host}:{port}{cmd['path']}", body, headers, warm)
    tally = Tally()
    elapsed = await run_load(host, port, request, conns=cmd["conns"], count=cmd["count"],
                             seconds=cmd["seconds"], tally=tally, ok_status=ok, timeout=timeout)
    expect = cmd.get("expect")
    first = tally.first_body
    if expect is not None and tally.ok and expect.encode() not in first[:4096]:
        tally.error(f"unexpected body: {first[:200]!r}")
    if cmd.get("string_size") and tally.ok and len(first) < cmd["string_size"]:
        tally.error(f"short body: {len(first)} bytes")
    return outcome(tally, elapsed, request_bytes=len(body), reply_bytes=len(first),
                   loader="python")


def _wrk_phase(cmd: dict[str, Any], url: str, body: bytes, headers: dict[str, str],
               warm: Tally) -> dict[str, Any]:
    """The timed phase by wrk; the body was checked on the Python client's warm-up."""
    figures = wrk.run(url, method=cmd["method"], body=body, headers=headers,
                      conns=cmd["conns"], seconds=cmd["seconds"],
                      timeout=float(cmd.get("call_timeout", 30.0)))
    end = time.time()
    expect = cmd.get("expect")
    error = warm.first_error
    if not error and expect is not None and expect.encode() not in warm.first_body[:4096]:
        error = f"unexpected body: {warm.first_body[:200]!r}"
    elapsed = figures["elapsed"]
    return {"window": [end - elapsed, end], "ok": figures["ok"],
            "errors": figures["errors"] + (1 if error else 0), "busy": 0, "elapsed": elapsed,
            "rate": figures["ok"] / elapsed if elapsed > 0 else 0.0, "p50": figures["p50"],
            "p99": figures["p99"], "error": error or (
                f"{figures['errors']} replies not 2xx/3xx or failed" if figures["errors"]
                else ""), "request_bytes": len(body), "loader": "wrk"}


# -- hot swap ----------------------------------------------------------------------------------

def swap(cmd: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_swap(cmd))


async def _swap(cmd: dict[str, Any]) -> dict[str, Any]:
    """A load of ``inflight`` runs while another client swaps the PTS ``swaps`` times.

    The load runs from a gap before the first swap until a gap after the last one finished
    (bounded by ``seconds``), so every swap falls inside the measured window.
    """
    call, close = async_caller(cmd)
    admin = AsyncClient(cmd["endpoint"], key=bytes.fromhex(cmd["key"]), timeout=60.0)
    swaps: list[float] = []
    swap_errors: list[str] = []
    done = asyncio.Event()
    try:
        await async_phase(call, inflight=cmd["inflight"], count=500, seconds=_warm(cmd),
                          tally=Tally())

        async def swapper() -> None:
            try:
                for n in range(1, cmd["swaps"] + 1):
                    await asyncio.sleep(cmd["gap"])
                    t0 = time.perf_counter()
                    try:
                        await admin.call(cmd["op"], swap_body(cmd, n))
                        swaps.append(time.perf_counter() - t0)
                    except PnsError as exc:
                        swap_errors.append(str(exc))
                await asyncio.sleep(cmd["gap"])
            finally:
                done.set()

        tally = Tally()
        task = asyncio.create_task(swapper())
        try:
            elapsed = await async_phase(call, inflight=cmd["inflight"], count=cmd["count"],
                                        seconds=cmd["seconds"], tally=tally, stop=done)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await admin.close()
        await close()
    return outcome(tally, elapsed, swaps=len(swaps),
                   swap_p50=percentile(swaps, 0.5), swap_errors=len(swap_errors),
                   swap_error=swap_errors[0] if swap_errors else "")


def swap_body(cmd: dict[str, Any], n: int) -> dict[str, Any]:
    if cmd["op"] == "pts.update":
        return {"name": cmd["pts"], "changes": {"timeout": 30 + n % 2}}
    spec = dict(cmd["spec"])
    spec["version"] = f"{spec.get('version') or 'v'}-swap{n}"
    return {"name": cmd["pts"], "spec": spec}


LOADS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "zmq_seq": zmq_seq, "zmq_async": zmq_async, "spawn_floor": spawn_floor, "jobs": jobs,
    "http": http, "swap": swap,
}
