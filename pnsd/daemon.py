"""The daemon: builds every part from the settings, serves, reloads and shuts down.

Owns the lifecycle (pidfile, signals, start-up order, graceful stop), reloading (SIGHUP, the
``reload`` operation and watch mode all re-read the settings and hand the PTS to the deployer)
and the wiring of store, audit, registry, scheduler, deployer, handlers and server. It holds no
request logic itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog
import zmq

from pnsd import demo
from pnsd.audit import AuditLog
from pnsd.config import (
    Settings,
    ensure_home,
    ipc_socket_path,
    load_settings,
)
from pnsd.curve import CurveGuard
from pnsd.demo.install import install_scripts
from pnsd.deploy import Deployer, SwapTiming
from pnsd.errors import ConfigError, DaemonError, InvalidSpec
from pnsd.handlers import Handlers
from pnsd.hosts.base import Host
from pnsd.hosts.inproc import InprocHost
from pnsd.hosts.leftovers import GroupLedger, Leftovers
from pnsd.hosts.process import ProcessHost
from pnsd.hosts.remote import JoinRefused, Pool, WorkerGate
from pnsd.hosts.workerslot import WorkerTuning
from pnsd.jobs.leases import NodeLease
from pnsd.jobs.scheduler import Scheduler
from pnsd.jobs.store import JobStore
from pnsd.jobs.uploads import Uploads
from pnsd.keyfile import load_or_create_key
from pnsd.notify import Notifier
from pnsd.pidfile import Pidfile
from pnsd.registry import Registry
from pnsd.server import Server
from pnsd.spec import Mode, PtsSpec
from pnsd.specfiles import SpecFiles
from pnsd.streamdoor import StreamDoor
from pnsd.watch import watch
from protocols import memory
from protocols.codec import Codec
from protocols.errors import ErrorCode
from protocols.streamlink import door_path

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE = 10.0     # seconds running jobs get to finish on SIGTERM
RETENTION_EVERY = 3600.0  # seconds between retention sweeps (age and size bounds of the store)


class Daemon:
    def __init__(self, settings: Settings, *,
                 reload_settings: Callable[[], Settings] | None = None,
                 worker_tuning: WorkerTuning | None = None) -> None:
        self.settings = settings
        self.worker_tuning = worker_tuning or WorkerTuning()   # heartbeats, budgets of workers
        # how a reload reads the settings again: by default the same file and home
        self.reload_settings = reload_settings or (
            lambda: load_settings(config=settings.source, home=settings.home))
        self.stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="pts")
        self.context: zmq.Context[Any] = zmq.Context()
        self.store = JobStore(settings.db_path, files_dir=settings.files_dir,
                              inline_limit=settings.inline_limit,
                              max_db_bytes=settings.max_db_bytes,
                              retention_bytes=settings.retention_bytes,
                              url=settings.store, node=settings.node)
        # a shared store: this node's lease tells the others it is alive
        self.lease = NodeLease(self.store, ttl=settings.lease_ttl) if settings.store else None
        self.ledger = GroupLedger(settings.run_dir / "groups")
        self.notifier = Notifier()
        self.registry = Registry(self.build_host)
        self.scheduler = Scheduler(self.registry, self.store,
                                   record_sync=settings.record_sync_runs)
        self.audit = AuditLog(self.store)
        self.deployer = Deployer(self.registry, self.audit,
                                 SpecFiles(settings.pts_dir, config=settings.source),
                                 timing=SwapTiming(settings.swap_timeout, settings.drain_timeout))
        self.server: Server | None = None
        self.door: StreamDoor | None = None
        self.tcp_server: Server | None = None    # clients over tcp_endpoint
        self.gate: WorkerGate | None = None      # remote workers over worker_endpoint
        self.guard: CurveGuard | None = None     # CURVE on both, unless tcp_insecure
        self._reloading = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()

    def build_host(self, spec: PtsSpec) -> Host:
        home = self.settings.home
        if spec.pythonpath:     # relative entries are relative to the home, in every mode
            base = home / spec.dir if spec.dir and spec.mode is Mode.PROCESS else home
            spec = dataclasses.replace(
                spec, pythonpath=tuple(str(base / item) for item in spec.pythonpath))
        if spec.mode is Mode.INPROC:
            return InprocHost(spec, executor=self.executor)
        if spec.mode is Mode.PROCESS:
            pts_dir = (home / spec.dir) if spec.dir else home
            # each generation gets an area of its own: the replaced one removes only its own
            # when it stops, while its successor (already serving) keeps running in another
            area = self.settings.work_dir / spec.name / f"gen-{secrets.token_hex(6)}"
            return ProcessHost(spec, pts_dir=pts_dir, work_dir=area,
                               scripts_fallback=demo.SCRIPTS_DIR, ledger=self.ledger)
        from pnsd.hosts.worker import WorkerHost  # noqa: PLC0415 - built only when used

        return WorkerHost(spec, context=self.context, run_dir=self.settings.run_dir, key=self.key,
                          key_file=self.settings.key_file, ledger=self.ledger,
                          tuning=self.worker_tuning)

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (or :attr:`stopping`), then stop gracefully."""
        settings = self.settings
        await asyncio.to_thread(ensure_home, settings)
        # the pidfile's lock comes before anything is written into the home: a second daemon
        # started on it is refused here, and leaves the first one's files alone
        with Pidfile(settings.pidfile):
            await self._run_with_pidfile()

    async def _run_with_pidfile(self) -> None:
        settings = self.settings
        if settings.demo:
            await asyncio.to_thread(install_scripts, settings.home)
        # the pidfile's lock proved no daemon owns this home: what a killed one left is ours
        await asyncio.to_thread(
            Leftovers(self.ledger, run_dir=settings.run_dir, work_dir=settings.work_dir).clean)
        self.key = load_or_create_key(settings.key_file, create=True)
        if not self.key:
            if settings.tcp_endpoint or settings.worker_endpoint:
                raise ConfigError("refusing a TCP endpoint with signing off (empty key file)")
            log.warning("signing_off", key_file=str(settings.key_file))
        await self.store.open()
        try:
            await self._serve()
        finally:
            await self.store.close()
            self.executor.shutdown(wait=False, cancel_futures=True)
            # destroy, not term: a stop cut short (cancelled) may leave a socket open, and
            # term would then wait for it forever
            self.context.destroy(linger=0)

    async def _serve(self) -> None:
        if self.lease is not None:   # claimed before recovery: a survivor leaves our jobs be
            await self.lease.claim()
        _failed, requeued = await self.store.recover(time.time(), requeue=self._idempotent)
        await self.audit.open()
        handlers = Handlers(self.registry, self.scheduler, home=self.settings.home,
                            deployer=self.deployer, reloader=self.reload,
                            max_message_bytes=self.settings.max_message_bytes)
        handlers.failures = self.deployer.failures
        handlers.uploads = Uploads(self.settings.home / "uploads",
                                   max_bytes=16 * self.settings.max_message_bytes)
        self.deployer.failures.update(await self.registry.add_all(self.settings.pts.values()))
        for job in requeued:
            await self.scheduler.resume(job)
        self.handlers = handlers
        table, streams = handlers.tables()
        # On ipc:// blob frames go unsigned (their lengths signed); the TCP doors have their
        # own ROUTERs and a codec that signs every byte (_open_tcp)
        codec = Codec(self.key, max_bytes=self.settings.max_message_bytes,
                      skew=self.settings.max_clock_skew,
                      local=self.settings.endpoint.startswith("ipc://"))
        self.server = Server(self.context, codec, handlers=table, streams=streams,
                             endpoints=[self.settings.endpoint])
        handlers.refusals = self.server.refusals
        try:
            await self._open_tcp(table, streams)
            await self._open_door(self.server)
            self._bind(self.server)
            self._keep(self._retention(), "retention")
            if self.lease is not None:
                self._keep(self.lease.keep(self._served, self.scheduler.resume), "lease")
            self._keep(memory.keep_trimmed(log.debug), "trim-memory")
            if self.settings.watch:
                self._keep(watch(self.settings.source, self.settings.pts_dir, self.reload),
                           "watch")
            with self._signals():
                await self._until_stopped(self.server)
        finally:
            for task in list(self._background):
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            await self._shutdown(self.server)

    async def _open_tcp(self, table: Any, streams: Any) -> None:
        """The TCP front doors: clients on tcp_endpoint, remote workers on worker_endpoint,
        both CURVE servers unless the node is configured insecure (on loopback only); every
        byte they carry is signed, blob frames too."""
        settings = self.settings
        if not (settings.tcp_endpoint or settings.worker_endpoint):
            return
        codec = Codec(self.key, max_bytes=settings.max_message_bytes,
                      skew=settings.max_clock_skew)
        assert self.server is not None
        refusals = self.server.refusals
        if settings.tcp_insecure:
            log.warning("tcp_insecure", hint="TCP without CURVE: for tests on loopback only")
        else:
            self.guard = CurveGuard(self.context, settings.curve_dir or settings.home / "curve",
                                    refusals)
            await self.guard.start()
        endpoint = settings.tcp_endpoint or settings.worker_endpoint
        try:
            if settings.tcp_endpoint:
                self.tcp_server = Server(self.context, codec, handlers=table, streams=streams,
                                         endpoints=[settings.tcp_endpoint], refusals=refusals)
                if self.guard is not None:
                    self.guard.secure(self.tcp_server.socket, "clients")
                self.tcp_server.bind()
            if settings.worker_endpoint:
                endpoint = settings.worker_endpoint
                self.gate = WorkerGate(self.context, codec, endpoint=endpoint,
                                       find=self._pool, refusals=refusals, guard=self.guard)
        except zmq.ZMQError as exc:     # a port in use, an address not of this machine
            raise ConfigError(f"cannot listen on {endpoint}: {exc.strerror}") from exc

    def _pool(self, name: str) -> Pool:
        """The worker host a remote worker asks to join (for the gate)."""
        from pnsd.hosts.worker import WorkerHost  # noqa: PLC0415 - built only when used

        generation = self.registry.find(name)
        if generation is None:
            raise JoinRefused(ErrorCode.NOT_FOUND, f"no PTS named {name!r}")
        host = generation.host
        if not isinstance(host, WorkerHost) or not host.spec.remote_workers:
            raise JoinRefused(ErrorCode.FORBIDDEN, f"PTS {name} does not take remote workers")
        return host

    def _served(self) -> tuple[list[str], list[str]]:
        """The PTS this node serves and, of them, the idempotent ones (for the lease)."""
        names = self.registry.names()
        return names, [name for name in names if self._idempotent(name)]

    def _idempotent(self, pts: str) -> bool:
        spec = self.settings.pts.get(pts)
        return spec is not None and spec.idempotent

    async def _retention(self) -> None:
        """Apply the retention bounds now and every RETENTION_EVERY seconds."""
        age, size = self.settings.retention_age, self.settings.retention_bytes
        if age is None and size is None:
            return
        while True:
            try:
                await self.store.cleanup(max_age=age, max_bytes=size)
            except DaemonError as exc:   # a full or broken store: say so, try again later
                log.error("retention_failed", error=exc.message)
            await asyncio.sleep(RETENTION_EVERY)

    async def _open_door(self, server: Server) -> None:
        """The stream door beside the ipc:// endpoint (pnsweb's way in), before the daemon
        says it is ready."""
        if self.settings.endpoint.startswith("ipc://"):
            self.door = StreamDoor(server, Path(door_path(self.settings.endpoint)))
            await self.door.open()

    def _bind(self, server: Server) -> None:
        socket_path = ipc_socket_path(self.settings.endpoint)
        if socket_path is not None and socket_path.exists():
            socket_path.unlink()  # a stale socket: the pidfile's lock proved nobody owns it
        server.bind()
        self.ready.set()
        self.notifier.send(f"READY=1\nMAINPID={os.getpid()}")
        tcp = [*(self.tcp_server.bound if self.tcp_server else []),
               *([self.gate.endpoint] if self.gate else [])]
        log.info("daemon_ready", pid=os.getpid(), endpoints=[*server.bound, *tcp],
                 pts=self.registry.names(), failed=sorted(self.handlers.failures))

    async def _until_stopped(self, server: Server) -> None:
        servers = [server, *([self.tcp_server] if self.tcp_server is not None else [])]
        serving = {asyncio.create_task(each.serve(), name="server") for each in servers}
        stopping = asyncio.create_task(self.stopping.wait(), name="stopping")
        try:
            done, _ = await asyncio.wait({*serving, stopping},
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done & serving:
                task.result()  # a server loop died: raise its error
        finally:
            for task in (*serving, stopping):
                task.cancel()
            await asyncio.gather(*serving, stopping, return_exceptions=True)

    async def _shutdown(self, server: Server) -> None:
        log.info("daemon_stopping")
        self.notifier.send("STOPPING=1")
        if self.door is not None:   # its connections, as the ROUTERs, are answered "stopping"
            self.door.stop()
        await self.scheduler.shutdown(grace=SHUTDOWN_GRACE)
        await server.drain(timeout=1.0)
        server.close()
        if self.door is not None:
            self.door.close()
        if self.tcp_server is not None:
            await self.tcp_server.drain(timeout=1.0)
            self.tcp_server.close()
        if self.lease is not None:
            await self.lease.release()
        await self.registry.stop_all(grace=2.0)
        if self.gate is not None:
            self.gate.close()
        if self.guard is not None:
            self.guard.stop()
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
        self._keep(self._reload_logged(), "reload")

    async def _reload_logged(self) -> None:
        with contextlib.suppress(DaemonError):     # reload() logged it: SIGHUP has no caller
            await self.reload()

    def _keep(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def reload(self) -> dict[str, str]:
        """Re-read the config and pts.d; apply only the PTS that changed, appeared or went away.

        Each goes through the deployer's swap (init, self-test, audit with who = "reload").
        A config that does not load changes nothing and raises its ConfigError.
        """
        async with self._reloading:
            try:
                fresh = await asyncio.to_thread(self.reload_settings)
            except (ConfigError, InvalidSpec) as exc:
                log.error("reload_failed", error=exc.message)
                raise
            self.deployer.timing = SwapTiming(fresh.swap_timeout, fresh.drain_timeout)
            outcome = await self.deployer.apply(fresh.pts, who="reload")
            self.settings = fresh
            log.info("reloaded", outcome=outcome)
            return outcome

