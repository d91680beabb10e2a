"""A small HTTP/1.1 load client on asyncio streams: N keep-alive connections, one request each
in flight, bounded by a count and a deadline.

Hand-written rather than ``aiohttp.ClientSession`` because the client shares the machine's two
cores with the server under test: this one costs a fraction of the CPU per request, so it
distorts the figures less. Handles Content-Length, chunked and close-delimited bodies; nothing
else of HTTP (no redirects, no TLS, no pipelining).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Tally:
    """What one phase of a load did."""

    ok: int = 0
    errors: int = 0
    busy: int = 0               # 409 / 429 / 503: refused as busy, by design
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""
    first_body: bytes = b""

    def error(self, text: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = text[:300]


def build_request(method: str, path: str, *, host: str, body: bytes = b"",
                  headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, server closes) of the next response on ``reader``."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length: int | None = None
    chunked = close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif length is not None:
        body = await reader.readexactly(length)
    else:
        body, close = await reader.read(), True
    return status, body, close


async def run_load(host: str, port: int, request: bytes, *, conns: int, count: int,
                   seconds: float, tally: Tally, ok_status: Callable[[int], bool],
                   timeout: float = 30.0) -> float:
    """Drive ``conns`` connections until ``count`` requests or ``seconds``; return elapsed."""
    remaining = [count]
    started = time.perf_counter()
    deadline = started + seconds
    big = len(request) > 2**16

    async def connection() -> None:
        reader = writer = None
        try:
            while remaining[0] > 0 and time.perf_counter() < deadline:
                remaining[0] -= 1
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port, limit=2**20)
                assert reader is not None
                t0 = time.perf_counter()
                writer.write(request)
                if big:
                    await writer.drain()
                status, body, close = await asyncio.wait_for(read_response(reader), timeout)
                tally.latencies.append(time.perf_counter() - t0)
                if ok_status(status):
                    tally.ok += 1
                    if not tally.first_body:
                        tally.first_body = body[:4096] if len(body) < 2**16 else body
                elif status in (409, 429, 503):
                    tally.busy += 1
                else:
                    tally.error(f"HTTP {status}: {body[:200]!r}")
                if close:
                    writer.close()
                    reader = writer = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, ValueError) as exc:
            tally.error(f"{type(exc).__name__}: {exc}")
        finally:
            if writer is not None:
                writer.close()

    await asyncio.gather(*(connection() for _ in range(conns)))
    return time.perf_counter() - started
