"""The lifecycle of a worker host's local workers: spawning, exits, respawns, heartbeats.

Owns starting every worker and waiting for its hello, what an exit does (the process group
killed, the worker released, its run failed, a respawn on the restart budget or the PTS marked
unavailable), the respawn itself and the watch that kills a worker silent for too long. It is
the :class:`pnsd.hosts.worker.WorkerHost`'s mixin and must not read or send worker messages,
nor pick which worker runs what (:mod:`pnsd.hosts.dispatcher`'s).
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import TYPE_CHECKING, Any

import structlog

from pnsd.errors import InvalidSpec, Unavailable
from pnsd.hosts.base import HostState
from pnsd.hosts.children import Child
from pnsd.hosts.dispatcher import Dispatcher
from pnsd.hosts.leftovers import GroupLedger
from pnsd.hosts.workerslot import Launch, RestartPolicy, Wire, WorkerSlot, WorkerTuning
from pnsd.spec import PtsSpec

log = structlog.get_logger(__name__)


class WorkerLifecycle:
    """Spawning and respawning the workers of a host that gives the slots and the launch."""

    # the host's, set by its __init__
    spec: PtsSpec
    tuning: WorkerTuning
    _ledger: GroupLedger | None
    _launch: Launch
    _outbox: Wire
    _workers: list[WorkerSlot]
    _by_identity: dict[bytes, WorkerSlot]
    _restarts: RestartPolicy
    _state: HostState
    _runs: Dispatcher

    if TYPE_CHECKING:   # the host's own methods, which this part calls
        def _set_state(self, state: str, reason: str = "") -> None: ...
        def _keep(self, coro: Any, name: str) -> None: ...
        def _on_hello(self, worker: WorkerSlot, message: Any) -> None: ...

    async def _start_workers(self) -> None:
        await asyncio.gather(*(self._spawn(worker) for worker in self._workers))
        hellos = {w.hello for w in self._workers if w.hello is not None}
        if not hellos:      # no local workers: remote ones join when they will
            return
        limit = self.tuning.start_timeout
        done, pending = await asyncio.wait(hellos, timeout=limit,
                                           return_when=asyncio.FIRST_EXCEPTION)
        for worker in self._workers:
            process = worker.ended
            if worker.hello in done and worker.hello.exception() and process is not None:
                message = await worker.start_error(self.spec.name, str(worker.hello.exception()))
                bad_spec = process.returncode in (3, 4)      # cannot load the entry or init
                raise (InvalidSpec if bad_spec else Unavailable)(message)
        if pending:
            raise Unavailable(f"PTS {self.spec.name}: {len(pending)} of {len(self._workers)} "
                              f"workers did not say hello within {limit:g} s")

    async def _spawn(self, worker: WorkerSlot) -> None:
        # known before the process exists: a quick worker's hello may arrive while the spawn
        # is still being recorded (it is kept in ``worker.early`` and handled below)
        self._by_identity[worker.begin()] = worker
        try:
            process = await worker.spawn(self._launch, limits=self.spec.limits,
                                         label={"pts": self.spec.name}, tuning=self.tuning,
                                         ledger=self._ledger, wire=self._outbox)
        except OSError as exc:
            self._by_identity.pop(worker.identity, None)
            raise Unavailable(f"PTS {self.spec.name}: cannot start a worker "
                              f"({self._launch.argv[0]}): {exc.strerror or exc}") from exc
        process.exited.add_done_callback(lambda _: self._on_exit(worker, process))
        if self._state.state in ("stopping", "stopped"):
            process.signal(signal.SIGKILL)
            return
        early, worker.early = worker.early, None
        if early is not None:
            self._on_hello(worker, early)
        await process.note()

    def _on_exit(self, worker: WorkerSlot, process: Child) -> None:
        process.signal(signal.SIGKILL)        # whatever the PTS left behind in its group
        process.closed.add_done_callback(lambda _: process.close())
        self._keep(process.forget(), "forget")
        if worker.process is not process:
            return
        reason, counts = worker.release(process, self.spec.limits,
                                        expected=self._state.state in ("stopping", "stopped"))
        self._by_identity.pop(worker.identity, None)
        if worker.hello is not None and not worker.hello.done():
            worker.hello.set_exception(ChildProcessError(reason))
        self._runs.worker_lost(worker, reason, pid=process.pid)
        if self._state.state == "ready":
            self._respawn_later(worker, reason, counts=counts)

    def _respawn_later(self, worker: WorkerSlot, reason: str, *, counts: bool) -> None:
        worker.failures += counts
        delay = self._restarts.delay(worker.failures) if counts else 0.0
        if delay is None:
            self._mark_unavailable(f"restart budget exhausted ({self.tuning.restarts} restarts "
                                   f"in {self.tuning.restart_window:g} s); last exit: {reason}")
            return
        self._keep(self._respawn(worker, delay), f"respawn-{worker.index}")

    async def _respawn(self, worker: WorkerSlot, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)    # restart backoff, not synchronisation
        try:
            await self._spawn(worker)
        except Unavailable as exc:
            self._mark_unavailable(exc.message)
            return
        assert worker.hello is not None
        done, _ = await asyncio.wait({worker.hello}, timeout=self.tuning.start_timeout)
        if not done:
            worker.kill(f"no hello within {self.tuning.start_timeout:g} s", counts=True)

    def _mark_unavailable(self, reason: str) -> None:
        self._set_state("unavailable", reason)
        self._runs.recheck()
        log.error("pts_unavailable", pts=self.spec.name, reason=reason)

    async def _watch_heartbeats(self) -> None:
        limit = self.tuning.heartbeat * self.tuning.missed_beats
        while True:
            await asyncio.sleep(self.tuning.heartbeat / 2)   # a periodic check
            now = time.monotonic()
            for worker in list(self._workers):     # a remote one leaves the list when killed
                silent = now - worker.last_seen
                if worker.ready and silent > limit:
                    worker.kill(f"no heartbeat for {silent:.1f} s (hung or stopped)",
                                counts=True)
