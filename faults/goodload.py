"""The well-behaved client that runs beside a fault: /v1 echo executions, every reply checked.

A fault passes only if this client sees no failure while the fault goes on.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp

from faults.procs import WEB_USER

EXECUTE = "/v1/processes/echo/execution"


@dataclass
class GoodLoad:
    url: str
    loops: int = 2
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        """``loops`` sequential clients until ``stop`` is set."""
        auth = aiohttp.BasicAuth(*WEB_USER)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(*(self._loop(session, auth, n, stop)
                                   for n in range(self.loops)))

    async def _loop(self, session: aiohttp.ClientSession, auth: aiohttp.BasicAuth, n: int,
                    stop: asyncio.Event) -> None:
        index = 0
        while not stop.is_set():
            index += 1
            self.sent += 1
            value = {"n": n, "i": index}
            started = time.monotonic()
            try:
                async with session.post(f"{self.url}{EXECUTE}", auth=auth,
                                        json={"inputs": value}) as reply:
                    body = await reply.read()
                if reply.status != 200 or json.loads(body) != value:
                    self.failures.append(f"HTTP {reply.status}: {body[:100]!r}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self.latencies.append(time.monotonic() - started)
