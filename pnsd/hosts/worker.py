"""The ``worker`` hosting mode: N persistent worker processes that speak the worker protocol.

Owns one wire per generation (a ROUTER at an ipc:// path under the run dir, or each worker's
stdin and stdout for ``transport = "stdio"``: the same messages either way, see
:mod:`pnsd.hosts.stdiolink`), the worker slots, their hellos and the protocol version they
agree on, receiving and sending worker messages, the host's state, and the cancel -> grace ->
kill ladder of timed-out or cancelled runs; the slots' lifecycle (spawning, exits, respawns on
the restart budget, heartbeats) is :mod:`pnsd.hosts.lifecycle`'s. Which task runs on which
worker, the line of callers waiting for one, deadlines and outcomes belong to
:mod:`pnsd.hosts.dispatcher`; processes are spawned, described and stopped by
:mod:`pnsd.hosts.children`, worker positions and launches are :mod:`pnsd.hosts.workerslot`'s.
Remote workers (``remote_workers`` in the spec) join through the daemon's gate
(:mod:`pnsd.hosts.remote`) and are served like the host's own; one that stops heartbeating is
dropped, failing its run (or handing it to another worker if the PTS is idempotent). It must
not admit or record jobs: the registry and scheduler above do that, and call :meth:`run` for
at most ``spec.slots`` runs at once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog
import zmq

from pnsd.errors import BadRequest
from pnsd.hosts.base import HostState, no_mailbox
from pnsd.hosts.dispatcher import Dispatcher, Run
from pnsd.hosts.handshake import choose_protocol
from pnsd.hosts.leftovers import GroupLedger
from pnsd.hosts.lifecycle import WorkerLifecycle
from pnsd.hosts.remote import JoinRefused, RemoteSlot
from pnsd.hosts.stdiolink import PipeWire
from pnsd.hosts.workerslot import (
    STDIO,
    Launch,
    Outbox,
    RestartPolicy,
    Wire,
    WorkerSlot,
    WorkerTuning,
    cancel_and_wait,
    stop_processes,
)
from pnsd.spec import HOOKS, PtsSpec
from protocols import messages
from protocols.codec import Codec, Message
from protocols.context import RunContext
from protocols.errors import ErrorCode, ProtocolError
from protocols.version import WORKER_PROTOCOLS

__all__ = ["WorkerHost", "WorkerTuning"]

log = structlog.get_logger(__name__)


class WorkerHost(WorkerLifecycle):
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
        # Workers are on a private ipc:// socket: blob frames unsigned (their lengths signed),
        # and a result's blobs stay the received frames (views) on their way to the client
        # and the store.
        self._codec = Codec(key, local=True, views=True)
        self._signed = Codec(key)       # remote workers (tcp://): every byte signed
        self._launch = Launch()
        self._outbox: Wire = PipeWire() if spec.transport == STDIO else Outbox()
        self._workers = [WorkerSlot(i) for i in range(spec.workers)]
        self._by_identity: dict[bytes, WorkerSlot] = {}
        self._hellos: dict[int, tuple[int, str, float]] = {}   # slot -> pid, python, since
        self._background: set[asyncio.Task[Any]] = set()
        self._restarts = RestartPolicy(self.tuning)
        self._state = HostState()     # changed in place (_set_state): the dispatcher reads it
        self._runs = Dispatcher(spec.name, workers=self._workers, state=self._state,
                                codec_for=self._codec_for, send=self._deliver,
                                cancel=self._cancel, retry=spec.idempotent,
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
            self._outbox.open(self._launch, self._context, self._receive)
            self._keep(self._watch_heartbeats(), "heartbeats")
            await self._start_workers()
        except BaseException as exc:
            await self.stop(grace=0.5)
            self._set_state("unavailable", getattr(exc, "message", None) or repr(exc))
            raise
        self._set_state("ready")
        log.info("worker_host_ready", pts=self.spec.name, workers=len(self._workers),
                 endpoint=self._launch.endpoint)

    def run(self, data: Any, *, timeout: float, ctx: RunContext) -> Coroutine[Any, Any, Any]:
        """The dispatcher's call itself: no coroutine of the host's own around it (a layer
        less on every run)."""
        return self._runs.call("run", data, timeout=timeout, ctx=ctx)

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
        for worker in list(self._workers):
            self._send(worker, messages.WORKER_STOP, {})
            if isinstance(worker, RemoteSlot):    # it rejoins the next generation, if any
                worker.kill(f"PTS {self.spec.name} stopped", counts=False)
        try:
            await cancel_and_wait(self._background)   # respawns first: every child is known
            await stop_processes([w.process for w in self._workers if w.process], grace)
        finally:    # even when this stop is cut short: no child, no open socket left behind
            for worker in self._workers:
                if worker.process is not None and not worker.process.exited.done():
                    worker.process.signal(signal.SIGKILL)
            self._outbox.close()
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
            "alive": sum(w.process is not None or w.route is not None for w in workers),
            "remote": sum(w.route is not None for w in workers),
            "remote_allowed": self.spec.remote_workers, "restarts": self._restarts.total,
            "pids": [w.process.pid for w in workers if w.process is not None],
            "each": [self._worker_state(w) for w in workers],
        }
        return HostState(state, reason, details)

    def _worker_state(self, worker: WorkerSlot) -> dict[str, Any]:
        """One worker: its pid, interpreter and ready time (from its hello), runs served, and
        whether it serves a run now."""
        pid = worker.process.pid if worker.process is not None else None
        where = "local"
        if isinstance(worker, RemoteSlot):
            pid, where = worker.pid, worker.where
        hello_pid, python, since = self._hellos.get(worker.index, (None, "", None))
        fresh = worker.ready and hello_pid == pid
        return {"pid": pid, "ready": worker.ready, "python": python if fresh else "",
                "since": since if fresh else None, "served": worker.served,
                "restarts": max(0, worker.spawns - 1), "busy": self._runs.is_busy(worker),
                "where": where}

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
        self.deliver(worker, message)

    def deliver(self, worker: WorkerSlot, message: Message) -> None:
        """One decoded message of ``worker`` (local, or remote through the gate)."""
        if worker.kill_reason and isinstance(worker, RemoteSlot):
            return                      # dropped from the pool: it must rejoin first
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
        if worker.hello is None or worker.hello.done():
            return
        if worker.process is None:      # its spawn is still being recorded: handled after it
            worker.early = message
            return
        body = message.body if isinstance(message.body, dict) else {}
        protocol, refusal = choose_protocol(body)
        if refusal:
            self._send(worker, messages.ERROR, {"code": ErrorCode.VERSION, "message": refusal,
                                                "details": {"worker": body.get("protocols"),
                                                            "daemon": list(WORKER_PROTOCOLS)}},
                       re=message.id)
            worker.refuse(f"hello refused: {refusal}", self.tuning.cancel_grace)
            return
        if "protocols" in body:
            self._send(worker, messages.WORKER_WELCOME, {"protocol": protocol}, re=message.id)
        worker.ready = True
        worker.failures = 0
        worker.hello.set_result(None)
        self._hellos[worker.index] = (worker.process.pid, str(body.get("python", ""))[:80],
                                      time.time())
        self._runs.hand_over()
        log.info("worker_ready", pts=self.spec.name, worker=worker.index,
                 pid=worker.process.pid, python=str(body.get("python", ""))[:40],
                 protocol=protocol, transport=self.spec.transport)

    def _send(self, worker: WorkerSlot, msg_type: str, body: Any, *, re: str | None = None) -> None:
        if worker.route is not None or (
                worker.process is not None and not worker.process.exited.done()):
            self._deliver(worker, self._codec_for(worker).encode(msg_type, body, re=re))

    def _codec_for(self, worker: WorkerSlot) -> Codec:
        return self._signed if worker.route is not None else self._codec

    def _deliver(self, worker: WorkerSlot, frames: list[bytes]) -> None:
        """Frames to one worker: a remote one through its gate, a local one on the wire."""
        if worker.route is not None:
            worker.route(frames)
        else:
            self._outbox.send(worker, frames)

    # -- remote workers --------------------------------------------------------------------

    def join(self, identity: bytes, hello: dict[str, Any], *,
             route: Callable[[list[bytes]], None], gone: Callable[[], None]) -> RemoteSlot:
        """A remote worker joins this generation's pool (the gate checked its CURVE key)."""
        if self._state.state not in ("ready", "starting"):
            raise JoinRefused(ErrorCode.UNAVAILABLE, f"PTS {self.spec.name} is "
                              f"{self._state.state}")
        if sum(w.route is not None for w in self._workers) >= self.spec.remote_workers:
            raise JoinRefused(ErrorCode.BUSY, f"PTS {self.spec.name} has its "
                              f"{self.spec.remote_workers} remote workers already")
        pid = hello["pid"] if isinstance(hello.get("pid"), int) else 0
        where = str(hello.get("host", ""))[:100] or "remote"
        index = max((w.index for w in self._workers), default=-1) + 1
        slot = RemoteSlot(index, identity=identity, route=route, where=where, pid=pid,
                          ready=True, on_lost=lambda lost, reason: self._left(lost, reason, gone))
        self._workers.append(slot)
        python = str(hello.get("python", ""))[:80]
        self._hellos[index] = (pid, python, time.time())
        log.info("remote_worker_joined", pts=self.spec.name, worker=index, where=where,
                 pid=pid, entry=str(hello.get("entry", ""))[:200], python=python[:40])
        self._runs.hand_over()
        return slot

    def _left(self, slot: RemoteSlot, reason: str, gone: Callable[[], None]) -> None:
        """A remote worker left the pool: its run fails (or goes to another worker)."""
        if slot in self._workers:
            self._workers.remove(slot)
        self._hellos.pop(slot.index, None)
        gone()
        if slot.route is not None:      # tell it, in case it is alive: it rejoins
            slot.route(self._signed.encode(messages.WORKER_STOP, {}))
        self._runs.worker_lost(slot, reason, pid=slot.pid)

    def _keep(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.spec.name}-{name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
