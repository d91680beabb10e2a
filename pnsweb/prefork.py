"""pnsweb on several processes: the parent that starts, watches and stops the children.

Owns serving one port from ``workers`` child processes (:mod:`pnsweb.child`). The parent
reserves the port first (bound with ``SO_REUSEPORT`` but never listening, so the kernel hands
it no connection, and a port 0 stays the same port for every child, restarts included), runs
the hub (:mod:`pnsweb.hub`) on a unix socket in a private directory, starts the children and
prints the serving line once every child serves. Each child listens on the port with
``SO_REUSEPORT`` (the kernel spreads new connections over them) and has its own link to pnsd.

Supervision: a child that exits while the parent is not stopping is started again after a
short backoff (0.1 s, doubling up to 5 s); more than :data:`RESTARTS` restarts within
:data:`WINDOW` seconds stop everything with exit code 1 (a child that keeps dying would
otherwise spin). SIGTERM or SIGINT stops all: each child gets SIGTERM (it finishes its requests
and closes its daemon link), then SIGKILL after :data:`STOP_GRACE`. A child whose parent dies
stops by itself (its hub link closes). Must not build the app or serve requests itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections import deque
from dataclasses import replace

import structlog

from pnsweb.hub import Hub
from pnsweb.settings import WebSettings
from pnsweb.sharing import MAX_FRAME

RESTARTS = 5              # restarts allowed within WINDOW seconds
WINDOW = 60.0
STOP_GRACE = 15.0         # seconds a child gets to stop before SIGKILL
READY_TIMEOUT = 60.0      # seconds for every child to serve at start
log = structlog.get_logger(__name__)

Process = asyncio.subprocess.Process


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with SO_REUSEPORT, not listening (OSError if taken).

    The port is first bound without SO_REUSEPORT, so that a port another program listens on
    (even one that allows sharing) is refused rather than shared with it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def serve_workers(settings: WebSettings, workers: int, *, banner: str) -> int:
    """Serve ``settings``' port from ``workers`` children until SIGTERM/SIGINT; the exit code.

    ``banner`` is printed (with ``{url}`` filled in) once every child serves.
    """
    reservation = reserve_port(settings.host, settings.port)
    settings = replace(settings, port=reservation.getsockname()[1])
    with tempfile.TemporaryDirectory(prefix="pnsweb-") as run_dir:     # mode 0700
        hub = Hub(settings, session_key=os.urandom(32))
        path = os.path.join(run_dir, "hub.sock")
        server = await asyncio.start_unix_server(hub.serve, path=path, limit=MAX_FRAME)
        try:
            return await Supervisor(path, workers, hub).run(banner.format(url=_url(settings)))
        finally:
            server.close()
            await hub.close()
            reservation.close()


class Supervisor:
    """The children of one pnsweb parent: started, restarted on a budget, stopped."""

    def __init__(self, hub_path: str, count: int, hub: Hub) -> None:
        self._hub_path = hub_path
        self._count = count
        self._hub = hub
        self._children: dict[int, Process] = {}
        self._exits: dict[int, asyncio.Task[int]] = {}
        self._restarts: deque[float] = deque()

    async def run(self, banner: str) -> int:
        stop = asyncio.create_task(stop_signal(), name="stop-signal")
        try:
            if not await self._start_all(stop):
                return 1
            print(banner, flush=True)
            log.info("pnsweb_started", processes=self._count, pids=sorted(self._children))
            return await self._watch(stop)
        finally:
            stop.cancel()
            await self._stop_all()

    async def _start_all(self, stop: asyncio.Task[None]) -> bool:
        """Start every child and wait until each serves; False if one fails or time is up."""
        for _ in range(self._count):
            await self._spawn()
        pending = set(self._children)
        deadline = time.monotonic() + READY_TIMEOUT
        while pending:
            ready = asyncio.create_task(self._hub.ready.get())
            done, _ = await asyncio.wait(
                {ready, stop, *self._exits.values()}, return_when=asyncio.FIRST_COMPLETED,
                timeout=max(0.0, deadline - time.monotonic()))
            if ready not in done:
                ready.cancel()
                log.error("pnsweb_children_not_ready", waiting=sorted(pending),
                          reason="a child exited, a stop was asked, or the time ran out")
                return False
            pending.discard(ready.result())
        return True

    async def _watch(self, stop: asyncio.Task[None]) -> int:
        """Restart the children that exit until a stop (0) or the budget is spent (1)."""
        while True:
            await asyncio.wait({stop, *self._exits.values()}, return_when=asyncio.FIRST_COMPLETED)
            if stop.done():
                return 0
            for pid, exited in list(self._exits.items()):
                if exited.done():
                    del self._exits[pid], self._children[pid]
                    log.warning("pnsweb_child_exited", pid=pid, code=exited.result())
                    if not await self._restart(stop):
                        return 0 if stop.done() else 1

    async def _restart(self, stop: asyncio.Task[None]) -> bool:
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > WINDOW:
            self._restarts.popleft()
        if len(self._restarts) >= RESTARTS:
            log.error("pnsweb_children_failing",
                      reason=f"more than {RESTARTS} restarts within {WINDOW:g} s; stopping")
            return False
        delay = min(5.0, 0.1 * 2 ** len(self._restarts))
        self._restarts.append(now)
        await asyncio.wait({stop}, timeout=delay)      # a stop meanwhile: no restart
        if stop.done():
            return False
        await self._spawn()
        return True

    async def _spawn(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pnsweb.child", self._hub_path, stdin=asyncio.subprocess.DEVNULL)
        self._children[process.pid] = process
        self._exits[process.pid] = asyncio.create_task(process.wait(), name=f"child-{process.pid}")
        log.info("pnsweb_child_started", pid=process.pid)

    async def _stop_all(self) -> None:
        """SIGTERM every child, then SIGKILL those still there after the grace."""
        for process in self._children.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        if self._exits:
            _, late = await asyncio.wait(set(self._exits.values()), timeout=STOP_GRACE)
            for pid, exited in self._exits.items():
                if exited in late:
                    log.warning("pnsweb_child_killed", pid=pid, grace=STOP_GRACE)
                    with contextlib.suppress(ProcessLookupError):
                        self._children[pid].kill()
            if late:
                await asyncio.wait(late)


async def stop_signal() -> None:
    """Return on the first SIGTERM or SIGINT (the single-process server waits on it too)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _url(settings: WebSettings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}"
