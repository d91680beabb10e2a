"""The ``worker`` hosting mode: N persistent worker processes that speak the worker protocol.

Owns one ROUTER per generation (ipc:// under the run dir), the worker slots and their lifecycle
(spawning, hellos, exits, respawns on the restart budget, heartbeats), receiving and sending
worker messages, the host's state, and the cancel -> grace -> kill ladder of timed-out or
cancelled runs. Which task runs on which worker, the line of callers waiting for one, deadlines
and outcomes belong to :mod:`pnsd.hosts.dispatcher`; processes are spawned, described and
stopped by :mod:`pnsd.hosts.children`, worker positions and launches are
:mod:`pnsd.hosts.workerslot`'s. It must not admit or record jobs: the registry and scheduler
above do that, and call :meth:`run` for at most ``spec.slots`` runs at once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
import zmq

from pnsd.errors import BadRequest, InvalidSpec, Unavailable
from pnsd.hosts.base import HostState, no_mailbox
from pnsd.hosts.children import Child
from pnsd.hosts.dispatcher import Dispatcher, Run
from pnsd.hosts.leftovers import GroupLedger
from pnsd.hosts.workerslot import (
    Launch,
    Outbox,
    RestartPolicy,
    WorkerSlot,
    WorkerTuning,
    cancel_and_wait,
    stop_processes,
)
from pnsd.spec import HOOKS, PtsSpec
from protocols import messages
from protocols.codec import Codec, Message
from protocols.context import RunContext
from protocols.errors import ProtocolError
from protocols.pump import Pump

__all__ = ["WorkerHost", "WorkerTuning"]

log = structlog.get_logger(__name__)


class WorkerHost:
    """Runs one generation of a worker-mode PTS."""

    queues_runs = True

    def __init__(self, spec: PtsSpec, *, context: zmq.Context[Any], run_dir: Path,
                 key: bytes, key_file: Path | None = None,
                 tuning: WorkerTuning | None = None, ledger: GroupLedger | None = None) -> None:
        self.spec = spec
        self._ledger = ledger       # notes each worker's group, for a restart after a crash
        self.tuning = tuning or WorkerTuning()
        self._context = context
        self._run_dir = run_dir
        self._key = key
        self._key_file = key_file
        self._codec = Codec(key)
        self._launch = Launch()
        self._pump: Pump | None = None
        self._outbox = Outbox()
        self._workers = [WorkerSlot(i) for i in range(spec.workers)]
        self._by_identity: dict[bytes, WorkerSlot] = {}
        self._hellos: dict[int, tuple[int, str, float]] = {}   # slot -> pid, python, since
        self._background: set[asyncio.Task[Any]] = set()
        self._restarts = RestartPolicy(self.tuning)
        self._state = HostState()     # changed in place (_set_state): the dispatcher reads it
        self._runs = Dispatcher(spec.name, workers=self._workers, state=self._state,
                                codec=self._codec, send=self._outbox.send, cancel=self._cancel,
                                prefetch=spec.prefetch)
        self._handlers: dict[str, Callable[[WorkerSlot, Message], None]] = {
            messages.WORKER_HELLO: self._on_hello,
            messages.WORKER_HEARTBEAT: lambda worker, message: None,   # every message is one
            messages.TASK_REP: self._runs.on_outcome, messages.ERROR: self._runs.on_outcome,
            messages.TASK_PROGRESS: self._runs.on_event, messages.TASK_LOG: self._runs.on_event,
        }

    # -- the Host contract ---------------------------------------------------------------

    async def start(self) -> None:
        try:
            await asyncio.to_thread(
                self._launch.prepare, self.spec, run_dir=self._run_dir, key=self._key,
                key_file=self._key_file, heartbeat=self.tuning.heartbeat)
            self._pump = self._outbox.pump = Pump(self._launch.bind(self._context),
                                                  self._receive)
            self._keep(self._watch_heartbeats(), "heartbeats")
            await self._start_workers()
        except BaseException as exc:
            await self.stop(grace=0.5)
            self._set_state("unavailable", getattr(exc, "message", None) or repr(exc))
            raise
        self._set_state("ready")
        log.info("worker_host_ready", pts=self.spec.name, workers=len(self._workers),
                 endpoint=self._launch.endpoint)

    async def run(self, data: Any, *, timeout: float, ctx: RunContext) -> Any:
        return await self._runs.call("run", data, timeout=timeout, ctx=ctx)

    async def hook(self, name: str, *, timeout: float) -> Any:
        if name not in HOOKS:
            raise BadRequest(f"unknown hook {name!r}; expected one of {', '.join(HOOKS)}")
        if getattr(self.spec, f"{name}_entry") is None:
            return None
        return await self._runs.call(name, None, timeout=timeout, ctx=RunContext())

    async def stop(self, *, grace: float) -> None:
        """worker.stop to all, ``grace`` to exit, then SIGTERM and SIGKILL on each group."""
        if self._state.state == "stopped":
            return
        self._set_state("stopping")
        self._runs.close(f"PTS {self.spec.name} stopped during the run")
        for worker in self._workers:
            self._send(worker, messages.WORKER_STOP, {})
        try:
            await cancel_and_wait(self._background)   # respawns first: every child is known
            await stop_processes([w.process for w in self._workers if w.process], grace)
        finally:    # even when this stop is cut short: no child, no open socket left behind
            for worker in self._workers:
                if worker.process is not None and not worker.process.exited.done():
                    worker.process.signal(signal.SIGKILL)
            if self._pump is not None:
                self._pump.close()
        await asyncio.gather(*self._background, return_exceptions=True)   # the exits' forgets
        await asyncio.to_thread(self._launch.remove)
        self._set_state("stopped")
        log.info("worker_host_stopped", pts=self.spec.name, restarts=self._restarts.total)

    def state(self) -> HostState:
        workers = self._workers
        ready = sum(w.ready for w in workers)
        state, reason = self._state.state, self._state.reason
        if state == "ready" and ready < len(workers):
            state, reason = "degraded", f"{len(workers) - ready} of {len(workers)} restarting"
        busy, waiting = self._runs.load()
        details = {
            "workers": len(workers), "ready": ready, "busy": busy, "waiting": waiting,
            "alive": sum(w.process is not None for w in workers), "restarts": self._restarts.total,
            "pids": [w.process.pid for w in workers if w.process is not None],
            "each": [self._worker_state(w) for w in workers],
        }
        return HostState(state, reason, details)

    def _worker_state(self, worker: WorkerSlot) -> dict[str, Any]:
        """One worker: its pid, interpreter and ready time (from its hello), runs served, and
        whether it serves a run now."""
        pid = worker.process.pid if worker.process is not None else None
        hello_pid, python, since = self._hellos.get(worker.index, (None, "", None))
        fresh = worker.ready and hello_pid == pid
        return {"pid": pid, "ready": worker.ready, "python": python if fresh else "",
                "since": since if fresh else None, "served": worker.served,
                "restarts": max(0, worker.spawns - 1), "busy": self._runs.is_busy(worker)}

    def exchange_dir(self) -> Path:
        raise no_mailbox(self.spec)

    def script(self, name: str) -> tuple[str, ...]:
        raise no_mailbox(self.spec)

    def _set_state(self, state: str, reason: str = "") -> None:
        """In place: the dispatcher holds the same HostState."""
        self._state.state, self._state.reason = state, reason

    # -- the cancel ladder ---------------------------------------------------------------

    def _cancel(self, run: Run, settled: asyncio.Future[None], reason: str) -> None:
        self._keep(self._cancel_ladder(run, settled, reason), f"cancel-{run.id[:8]}")

    async def _cancel_ladder(self, run: Run, settled: asyncio.Future[None],
                             reason: str) -> None:
        """Cancel politely, then kill the worker if it does not stop within the grace."""
        worker = run.worker
        assert worker is not None       # only a dispatched run has a ladder
        self._send(worker, messages.TASK_CANCEL, {}, re=run.id)
        grace = self.tuning.cancel_grace
        await asyncio.wait({settled}, timeout=grace)
        if not settled.done():
            worker.kill(f"{reason}; still running {grace:g} s after cancel", counts=False)

    # -- worker messages -----------------------------------------------------------------

    def _receive(self, frames: list[bytes]) -> None:
        worker = self._by_identity.get(frames[0])
        if worker is None:
            log.debug("worker_message_ignored", pts=self.spec.name, reason="unknown identity")
            return
        try:
            message = self._codec.decode(frames[1:])
        except ProtocolError as exc:
            log.warning("worker_message_refused", pts=self.spec.name, worker=worker.index,
                        code=exc.code, error=exc.message)
            return
        worker.last_seen = time.monotonic()
        handler = self._handlers.get(message.type)
        if handler is None:
            log.warning("worker_message_unexpected", pts=self.spec.name, worker=worker.index,
                        type=message.type)
            return
        try:
            handler(worker, message)
        except Exception:  # the loop boundary: one bad message must not stop the host
            log.exception("worker_message_failed", pts=self.spec.name, type=message.type)

    def _on_hello(self, worker: WorkerSlot, message: Message) -> None:
        if worker.hello is None or worker.hello.done() or worker.process is None:
            return
        body = message.body if isinstance(message.body, dict) else {}
        worker.ready = True
        worker.failures = 0
        worker.hello.set_result(None)
        self._hellos[worker.index] = (worker.process.pid, str(body.get("python", ""))[:80],
                                      time.time())
        self._runs.hand_over()
        log.info("worker_ready", pts=self.spec.name, worker=worker.index,
                 pid=worker.process.pid, python=str(body.get("python", ""))[:40])

    def _send(self, worker: WorkerSlot, msg_type: str, body: Any, *, re: str | None = None) -> None:
        if worker.process is not None and not worker.process.exited.done():
            self._outbox.send(worker, self._codec.encode(msg_type, body, re=re))

    # -- the worker lifecycle ------------------------------------------------------------

    async def _start_workers(self) -> None:
        await asyncio.gather(*(self._spawn(worker) for worker in self._workers))
        hellos = {w.hello for w in self._workers if w.hello is not None}
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
        try:
            process = await worker.spawn(self._launch, limits=self.spec.limits,
                                         label={"pts": self.spec.name}, tuning=self.tuning,
                                         ledger=self._ledger)
        except OSError as exc:
            raise Unavailable(f"PTS {self.spec.name}: cannot start a worker "
                              f"({self._launch.argv[0]}): {exc.strerror or exc}") from exc
        self._by_identity[worker.identity] = worker
        process.exited.add_done_callback(lambda _: self._on_exit(worker, process))
        if self._state.state in ("stopping", "stopped"):
            process.signal(signal.SIGKILL)
        else:
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
            for worker in self._workers:
                silent = now - worker.last_seen
                if worker.ready and silent > limit:
                    worker.kill(f"no heartbeat for {silent:.1f} s (hung or stopped)",
                                counts=True)

    def _keep(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.spec.name}-{name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
