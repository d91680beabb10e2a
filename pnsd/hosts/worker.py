"""The ``worker`` hosting mode: N persistent worker processes that speak the worker protocol.

Owns one ROUTER per generation (ipc:// under the run dir), the worker slots, dispatching one task
at a time per worker (least-used idle worker first; calls beyond the idle workers wait in line
and are handed a worker in the very callback that frees it), relaying progress and log lines
into the run's context, deadlines, the cancel -> grace -> kill ladder of timed-out or cancelled
runs, and watching heartbeats. Processes are spawned, described and stopped by
:mod:`pnsd.supervisor`. It must not admit or record jobs: the registry and scheduler above do
that, and call :meth:`run` for at most ``spec.slots`` runs at once.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import zmq

from pnsd.errors import (
    BadRequest,
    Cancelled,
    InvalidSpec,
    PtsFailed,
    RunTimeout,
    Unavailable,
    WorkerDied,
)
from pnsd.hosts.base import HOOKS, HostState
from pnsd.spec import PtsSpec
from pnsd.supervisor import (
    Launch,
    RestartPolicy,
    WorkerProcess,
    WorkerSlot,
    WorkerTuning,
    cancel_and_wait,
    stop_processes,
)
from protocols import messages
from protocols.codec import Codec, Message, new_message_id
from protocols.context import RunContext
from protocols.errors import ErrorCode, ProtocolError, RemoteError
from protocols.pump import Pump

__all__ = ["WorkerHost", "WorkerTuning"]

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class _Task:
    id: str
    op: str
    future: asyncio.Future[Any]
    ctx: RunContext
    worker: WorkerSlot
    deadline: float                               # loop time the task must be done by
    timeout: float
    settled: asyncio.Future[None] | None = None   # made by a cancel ladder: the worker is free


@dataclass(eq=False)
class _Waiter:
    """A caller in line for a worker; ``future`` gets its dispatched task (None: look again)."""

    op: str
    data: Any
    ctx: RunContext
    timeout: float
    future: asyncio.Future[_Task | None]


class WorkerHost:
    """Runs one generation of a worker-mode PTS."""

    queues_runs = True

    def __init__(self, spec: PtsSpec, *, context: zmq.Context[Any], run_dir: Path,
                 key: bytes, key_file: Path | None = None,
                 tuning: WorkerTuning | None = None) -> None:
        self.spec = spec
        self.tuning = tuning or WorkerTuning()
        self._context = context
        self._run_dir = run_dir
        self._key = key
        self._key_file = key_file
        self._codec = Codec(key)
        self._launch = Launch()
        self._pump: Pump | None = None
        self._workers = [WorkerSlot(i) for i in range(spec.workers)]
        self._by_identity: dict[bytes, WorkerSlot] = {}
        self._tasks: dict[str, _Task] = {}            # by task id
        self._busy: dict[WorkerSlot, _Task] = {}
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._alarm: asyncio.TimerHandle | None = None   # the earliest deadline of a task
        self._background: set[asyncio.Task[Any]] = set()
        self._restarts = RestartPolicy(self.tuning)
        self._state = HostState()
        self._handlers: dict[str, Callable[[WorkerSlot, Message], None]] = {
            messages.WORKER_HELLO: self._on_hello,
            messages.WORKER_HEARTBEAT: lambda worker, message: None,   # every message is one
            messages.TASK_REP: self._on_outcome, messages.ERROR: self._on_outcome,
            messages.TASK_PROGRESS: self._on_event, messages.TASK_LOG: self._on_event,
        }

    # -- the Host contract ---------------------------------------------------------------

    async def start(self) -> None:
        try:
            await asyncio.to_thread(
                self._launch.prepare, self.spec, run_dir=self._run_dir, key=self._key,
                key_file=self._key_file, heartbeat=self.tuning.heartbeat)
            self._pump = Pump(self._launch.bind(self._context), self._receive)
            self._keep(self._watch_heartbeats(), "heartbeats")
            await self._start_workers()
        except BaseException as exc:
            await self.stop(grace=0.5)
            self._state = HostState("unavailable", getattr(exc, "message", None) or repr(exc))
            raise
        self._state = HostState("ready")
        log.info("worker_host_ready", pts=self.spec.name, workers=len(self._workers),
                 endpoint=self._launch.endpoint)

    async def run(self, data: Any, *, timeout: float, ctx: RunContext) -> Any:
        return await self._call("run", data, timeout=timeout, ctx=ctx)

    async def hook(self, name: str, *, timeout: float) -> Any:
        if name not in HOOKS:
            raise BadRequest(f"unknown hook {name!r}; expected one of {', '.join(HOOKS)}")
        if getattr(self.spec, f"{name}_entry") is None:
            return None
        return await self._call(name, None, timeout=timeout, ctx=RunContext())

    async def stop(self, *, grace: float) -> None:
        """worker.stop to all, ``grace`` to exit, then SIGTERM and SIGKILL on each group."""
        if self._state.state == "stopped":
            return
        self._state = HostState("stopping")
        self._wake_all()
        if self._alarm is not None:
            self._alarm.cancel()
        for worker in self._workers:
            self._send(worker, messages.WORKER_STOP, {})
        for task in list(self._tasks.values()):   # a drained generation has none left
            self._settle(task, error=Unavailable(f"PTS {self.spec.name} stopped during the run"))
        await cancel_and_wait(self._background)   # respawns first: then every child is known
        await stop_processes([w.process for w in self._workers if w.process], grace)
        if self._pump is not None:
            self._pump.close()
        await asyncio.to_thread(self._launch.remove)
        self._state = HostState("stopped")
        log.info("worker_host_stopped", pts=self.spec.name, restarts=self._restarts.total)

    def state(self) -> HostState:
        workers = self._workers
        ready = sum(w.ready for w in workers)
        state, reason = self._state.state, self._state.reason
        if state == "ready" and ready < len(workers):
            state, reason = "degraded", f"{len(workers) - ready} of {len(workers)} restarting"
        details = {
            "workers": len(workers), "ready": ready, "busy": len(self._busy),
            "waiting": sum(not w.future.done() for w in self._waiters),
            "alive": sum(w.process is not None for w in workers), "restarts": self._restarts.total,
            "pids": [w.process.pid for w in workers if w.process is not None],
        }
        return HostState(state, reason, details)

    async def _call(self, op: str, data: Any, *, timeout: float, ctx: RunContext) -> Any:
        worker = self._idle_worker()
        if worker is not None:
            task = self._dispatch(worker, op, data, ctx, timeout=timeout)
        else:
            task = await self._queue(op, data, ctx, timeout=timeout)
        # The caller awaits the outcome itself; deadlines are watched by one alarm per host
        # (see _dispatch). A cancelled caller cancels task.future: _settle skips a done future
        # and _abort goes by the task table.
        try:
            return await task.future
        except asyncio.CancelledError:
            self._abort(task, f"{op} cancelled")
            raise

    def _idle_worker(self) -> WorkerSlot | None:
        """The least-used idle worker of a ready host, or None."""
        if self._state.state != "ready":
            return None
        best: WorkerSlot | None = None
        for worker in self._workers:
            if worker.ready and worker not in self._busy and (
                    best is None or worker.served < best.served):
                best = worker
        return best

    async def _queue(self, op: str, data: Any, ctx: RunContext, *, timeout: float) -> _Task:
        """Wait in line for a worker (at most ``timeout`` s); the task dispatched for us.

        A freed worker is handed to the first in line at once, in the callback that freed it
        (_hand_over): the next task leaves with no event-loop round trip in between. The run's
        own timeout starts when its task is dispatched.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._state.state != "ready":
                reason = f": {self._state.reason}" if self._state.reason else ""
                raise Unavailable(f"PTS {self.spec.name} is {self._state.state}{reason}")
            if (idle := self._idle_worker()) is not None:
                return self._dispatch(idle, op, data, ctx, timeout=timeout)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RunTimeout(f"PTS {self.spec.name}: no worker free for the {op} "
                                 f"within {timeout:g} s ({len(self._busy)} busy, "
                                 f"{sum(not w.ready for w in self._workers)} restarting)")
            waiter = _Waiter(op, data, ctx, timeout, loop.create_future())
            self._waiters.append(waiter)
            try:
                await asyncio.wait({waiter.future}, timeout=remaining)
            except BaseException:
                self._leave_queue(waiter, f"{op} cancelled")
                raise
            if not waiter.future.done():
                waiter.future.cancel()          # waited too long: skipped by _hand_over
            elif (task := waiter.future.result()) is not None:   # raises a dispatch error
                return task

    def _leave_queue(self, waiter: _Waiter, reason: str) -> None:
        """A queued caller gives up: undo what was done for it meanwhile."""
        if not waiter.future.done():
            waiter.future.cancel()
        elif not waiter.future.cancelled() and waiter.future.exception() is None:
            task = waiter.future.result()
            if task is None:
                self._hand_over()               # woken to look again: the next one looks
            else:                               # dispatched already: nobody awaits it
                task.future.cancel()
                self._abort(task, reason)

    def _hand_over(self) -> None:
        """Dispatch the first queued callers' tasks to idle workers, now."""
        while self._waiters and (worker := self._idle_worker()) is not None:
            waiter = self._waiters.popleft()
            if waiter.future.done():            # gave up meanwhile
                continue
            try:
                task = self._dispatch(worker, waiter.op, waiter.data, waiter.ctx,
                                      timeout=waiter.timeout)
            except BadRequest as exc:
                waiter.future.set_exception(exc)
                continue
            waiter.future.set_result(task)

    def _wake_all(self) -> None:
        """The host's state changed: every queued caller looks again."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result(None)

    def _dispatch(self, worker: WorkerSlot, op: str, data: Any, ctx: RunContext, *,
                  timeout: float) -> _Task:
        msg_id = new_message_id()
        body = {"op": op, "data": data, "timeout": timeout, "job": ctx.job_id}
        try:
            frames = self._codec.encode(messages.TASK_REQ, body, msg_id=msg_id)
        except ProtocolError as exc:
            raise BadRequest(f"the input cannot be encoded: {exc.message}") from exc
        loop = asyncio.get_running_loop()
        # No consume callback: the caller awaits this future until it is done or cancelled
        future: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + timeout
        task = _Task(msg_id, op, future, ctx, worker, deadline, timeout)
        self._busy[worker] = task
        self._tasks[msg_id] = task
        self._send_frames(worker, frames)
        # One alarm per host, at the earliest deadline: a timer per run costs every run, and
        # with one timeout per PTS the next deadline is almost always later than the alarm.
        if self._alarm is None or deadline < self._alarm.when():
            self._set_alarm(deadline)
        return task

    def _set_alarm(self, when: float) -> None:
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm = asyncio.get_running_loop().call_at(when, self._on_alarm, when)

    def _on_alarm(self, when: float) -> None:
        """Expire every task due by ``when``; then wait for the earliest deadline left."""
        self._alarm = None
        earliest: float | None = None
        for task in list(self._tasks.values()):
            if task.future.done():          # expired or abandoned already: settling
                continue
            if task.deadline <= when:
                self._expire(task)
            elif earliest is None or task.deadline < earliest:
                earliest = task.deadline
        if earliest is not None:
            self._set_alarm(earliest)

    def _expire(self, task: _Task) -> None:
        self._abort(task, f"{task.op} exceeded {task.timeout:g} s")
        task.future.set_exception(
            RunTimeout(f"PTS {self.spec.name}: {task.op} exceeded {task.timeout:g} s"))

    def _abort(self, task: _Task, reason: str) -> None:
        """Cancel politely, then kill the worker if it does not stop within the grace."""
        if self._tasks.get(task.id) is task and task.settled is None:
            settled = task.settled = asyncio.get_running_loop().create_future()
            self._keep(self._cancel_ladder(task, settled, reason), f"cancel-{task.id[:8]}")

    async def _cancel_ladder(self, task: _Task, settled: asyncio.Future[None],
                             reason: str) -> None:
        self._send(task.worker, messages.TASK_CANCEL, {}, re=task.id)
        grace = self.tuning.cancel_grace
        await asyncio.wait({settled}, timeout=grace)
        if not settled.done():
            task.worker.kill(f"{reason}; still running {grace:g} s after cancel",
                       counts=False)

    def _settle(self, task: _Task, *, result: Any = None, error: Exception | None = None) -> None:
        self._tasks.pop(task.id, None)
        worker = task.worker
        if self._busy.get(worker) is task:
            del self._busy[worker]
            worker.served += 1
            if self._waiters:
                self._hand_over()
        if task.settled is not None and not task.settled.done():
            task.settled.set_result(None)
        if not task.future.done():
            if error is not None:
                task.future.set_exception(error)
            else:
                task.future.set_result(result)

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
        self._hand_over()
        log.info("worker_ready", pts=self.spec.name, worker=worker.index,
                 pid=worker.process.pid, python=str(body.get("python", ""))[:40])

    def _on_outcome(self, worker: WorkerSlot, message: Message) -> None:
        task = self._tasks.get(message.re or "")
        if task is None or task.worker is not worker:
            log.warning("worker_reply_unmatched", pts=self.spec.name, worker=worker.index,
                        type=message.type)
            return
        if message.type == messages.TASK_REP:
            body = message.body
            self._settle(task, result=body.get("result") if isinstance(body, dict) else None)
            return
        remote = RemoteError.from_body(message.body)
        error_type = Cancelled if remote.code == ErrorCode.CANCELLED else PtsFailed
        self._settle(task, error=error_type(remote.message, pts_code=remote.code))

    def _on_event(self, worker: WorkerSlot, message: Message) -> None:
        task, body = self._tasks.get(message.re or ""), message.body
        if task is None or task.worker is not worker or not isinstance(body, dict):
            return
        percent = body.get("percent")
        if message.type == messages.TASK_LOG:
            task.ctx.log(str(body.get("line", ""))[:16384])
        elif isinstance(percent, int | float) and not isinstance(percent, bool):
            task.ctx.progress(int(percent), str(body.get("message", ""))[:1000])

    def _send(self, worker: WorkerSlot, msg_type: str, body: Any, *, re: str | None = None) -> None:
        if worker.process is not None and not worker.process.exited.done():
            self._send_frames(worker, self._codec.encode(msg_type, body, re=re))

    def _send_frames(self, worker: WorkerSlot, frames: list[bytes]) -> None:
        if self._pump is None:
            return
        try:
            self._pump.send([worker.identity, *frames])
        except zmq.ZMQError as exc:    # unroutable (gone) or not reading: it cannot serve
            worker.kill(f"unreachable ({exc.strerror})", counts=True)

    async def _start_workers(self) -> None:
        await asyncio.gather(*(self._spawn(worker) for worker in self._workers))
        hellos = {w.hello for w in self._workers if w.hello is not None}
        limit = self.tuning.start_timeout
        done, pending = await asyncio.wait(hellos, timeout=limit,
                                           return_when=asyncio.FIRST_EXCEPTION)
        for worker in self._workers:
            process = worker.ended
            if worker.hello in done and worker.hello.exception() and process is not None:
                message = await process.start_error(self.spec.name, str(worker.hello.exception()))
                bad_spec = process.returncode in (3, 4)      # cannot load the entry or init
                raise (InvalidSpec if bad_spec else Unavailable)(message)
        if pending:
            raise Unavailable(f"PTS {self.spec.name}: {len(pending)} of {len(self._workers)} "
                              f"workers did not say hello within {limit:g} s")

    async def _spawn(self, worker: WorkerSlot) -> None:
        try:
            process = await worker.spawn(self._launch, limits=self.spec.limits,
                                         label={"pts": self.spec.name}, tuning=self.tuning)
        except OSError as exc:
            raise Unavailable(f"PTS {self.spec.name}: cannot start a worker "
                              f"({self._launch.argv[0]}): {exc.strerror or exc}") from exc
        self._by_identity[worker.identity] = worker
        process.exited.add_done_callback(lambda _: self._on_exit(worker, process))
        if self._state.state in ("stopping", "stopped"):
            process.signal_group(signal.SIGKILL)

    def _on_exit(self, worker: WorkerSlot, process: WorkerProcess) -> None:
        process.signal_group(signal.SIGKILL)        # whatever the PTS left behind in its group
        process.closed.add_done_callback(lambda _: process.close())
        if worker.process is not process:
            return
        reason, counts = worker.release(process, self.spec.limits,
                                        expected=self._state.state in ("stopping", "stopped"))
        self._by_identity.pop(worker.identity, None)
        if worker.hello is not None and not worker.hello.done():
            worker.hello.set_exception(ChildProcessError(reason))
        if (task := self._busy.get(worker)) is not None:
            self._settle(task, error=WorkerDied(
                f"worker died during the {task.op}: {reason}", pid=process.pid))
        self._wake_all()      # the state may have changed: every waiter looks again
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
        self._state = HostState("unavailable", reason)
        self._wake_all()
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
