"""The daemon: builds every part from the settings, serves, reloads and shuts down.

Owns the lifecycle (pidfile, signals, start-up order, graceful stop) and the wiring of store,
registry, scheduler, handlers and server. It holds no request logic itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
import zmq

from pnsd import demo
from pnsd.config import Settings, ensure_home, ipc_socket_path, load_or_create_key
from pnsd.demo.install import install_scripts
from pnsd.errors import ConfigError, InvalidSpec
from pnsd.handlers import Handlers
from pnsd.hosts.base import Host
from pnsd.hosts.inproc import InprocHost
from pnsd.hosts.process import ProcessHost
from pnsd.pidfile import Pidfile
from pnsd.registry import Registry
from pnsd.scheduler import Scheduler
from pnsd.server import Server
from pnsd.spec import Mode, PtsSpec
from pnsd.store import JobStore
from protocols.codec import Codec

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE = 10.0     # seconds running jobs get to finish on SIGTERM


class Daemon:
    def __init__(self, settings: Settings, *, reload_settings: object = None) -> None:
        self.settings = settings
        self.reload_settings = reload_settings
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="pts")
        self.context: zmq.Context[Any] = zmq.Context()
        self.store = JobStore(settings.db_path, files_dir=settings.files_dir,
                              inline_limit=settings.inline_limit)
        self.registry = Registry(self.build_host)
        self.scheduler = Scheduler(self.registry, self.store,
                                   record_sync=settings.record_sync_runs)
        self.server: Server | None = None

    def build_host(self, spec: PtsSpec) -> Host:
        if spec.mode is Mode.INPROC:
            return InprocHost(spec, executor=self.executor)
        if spec.mode is Mode.PROCESS:
            home = self.settings.home
            pts_dir = (home / spec.dir) if spec.dir else home
            return ProcessHost(spec, pts_dir=pts_dir, work_dir=self.settings.work_dir / spec.name,
                               scripts_fallback=demo.SCRIPTS_DIR)
        from pnsd.hosts.worker import WorkerHost  # noqa: PLC0415 - built only when used

        return WorkerHost(spec, context=self.context, run_dir=self.settings.run_dir, key=self.key,
                          key_file=self.settings.key_file)

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (or :attr:`stopping`), then stop gracefully."""
        settings = self.settings
        await asyncio.to_thread(self._prepare_home)
        with Pidfile(settings.pidfile):
            await self._run_with_pidfile()

    async def _run_with_pidfile(self) -> None:
        settings = self.settings
        self.key = load_or_create_key(settings.key_file, create=True)
        if not self.key:
            if settings.tcp_endpoint:
                raise ConfigError("refusing a TCP endpoint with signing off (empty key file)")
            log.warning("signing_off", key_file=str(settings.key_file))
        await self.store.open()
        try:
            await self._serve()
        finally:
            await self.store.close()
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.context.term()

    async def _serve(self) -> None:
        await self.store.recover(time.time())
        handlers = Handlers(self.registry, self.scheduler, home=self.settings.home)
        handlers.failures = await self.registry.add_all(self.settings.pts.values())
        self.handlers = handlers
        table, streams = handlers.tables()
        codec = Codec(self.key, max_bytes=self.settings.max_message_bytes,
                      skew=self.settings.max_clock_skew)
        endpoints = [self.settings.endpoint]
        if self.settings.tcp_endpoint:
            endpoints.append(self.settings.tcp_endpoint)
        self.server = Server(self.context, codec, handlers=table, streams=streams,
                             endpoints=endpoints)
        try:
            self._bind(self.server)
            with self._signals():
                await self._until_stopped(self.server)
        finally:
            await self._shutdown(self.server)

    def _bind(self, server: Server) -> None:
        socket_path = ipc_socket_path(self.settings.endpoint)
        if socket_path is not None and socket_path.exists():
            socket_path.unlink()  # a stale socket: the pidfile check proved nobody owns it
        server.bind()
        self.ready.set()
        log.info("daemon_ready", pid=os.getpid(), endpoints=server.bound,
                 pts=self.registry.names(), failed=sorted(self.handlers.failures))

    async def _until_stopped(self, server: Server) -> None:
        serving = asyncio.create_task(server.serve(), name="server")
        stopping = asyncio.create_task(self.stopping.wait(), name="stopping")
        try:
            done, _ = await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if serving in done:
                serving.result()  # the server loop died: raise its error
        finally:
            for task in (serving, stopping):
                task.cancel()
            await asyncio.gather(serving, stopping, return_exceptions=True)

    async def _shutdown(self, server: Server) -> None:
        log.info("daemon_stopping")
        await self.scheduler.shutdown(grace=SHUTDOWN_GRACE)
        await server.drain(timeout=1.0)
        server.close()
        await self.registry.stop_all(grace=2.0)
        socket_path = ipc_socket_path(self.settings.endpoint)
        if socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                socket_path.unlink()
        log.info("daemon_stopped")

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_soon)
        try:
            yield
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)

    def _reload_soon(self) -> None:
        asyncio.get_running_loop().create_task(self.reload(), name="reload")

    async def reload(self) -> dict[str, str]:
        """Re-read the config and apply only the PTS that changed, appeared or went away."""
        if not callable(self.reload_settings):
            return {}
        try:
            fresh: Settings = self.reload_settings()
        except (ConfigError, InvalidSpec) as exc:
            log.error("reload_failed", error=exc.message)
            return {"config": exc.message}
        outcome = await self.registry.apply(fresh.pts)
        self.settings = fresh
        log.info("reloaded", outcome=outcome)
        return outcome

    def _prepare_home(self) -> None:
        ensure_home(self.settings)
        if self.settings.demo:
            install_scripts(self.settings.home)

