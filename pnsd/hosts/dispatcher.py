"""The runs of a worker host: which task each worker runs, who waits for one, and deadlines.

Owns the task table (by task id and by worker), dispatching one task at a time per worker
(least-used idle worker first), the FIFO line of callers waiting for a worker (a freed worker is
handed to the first in line in the very callback that frees it), one deadline alarm per host,
and settling tasks from their workers' replies, with progress and log lines relayed into the
run's context. It must not spawn, signal or stop processes, own sockets or background tasks, or
change the host's state: :class:`pnsd.hosts.worker.WorkerHost` does all that and hands this
module its state to read, its send and its cancel ladder.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from pnsd.errors import BadRequest, Cancelled, PtsFailed, RunTimeout, Unavailable, WorkerDied
from pnsd.hosts.base import HostState
from pnsd.supervisor import WorkerSlot
from protocols import messages
from protocols.codec import Codec, Message, new_message_id
from protocols.context import RunContext
from protocols.errors import ErrorCode, ProtocolError, RemoteError

__all__ = ["Dispatcher", "Task"]

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class Task:
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
    future: asyncio.Future[Task | None]


class Dispatcher:
    """Runs the tasks of one worker host's callers on its workers, one task per worker."""

    def __init__(self, pts: str, *, workers: list[WorkerSlot], state: HostState, codec: Codec,
                 send: Callable[[WorkerSlot, list[bytes]], None],
                 cancel: Callable[[Task, asyncio.Future[None], str], None]) -> None:
        self._pts = pts
        self._workers = workers
        self._state = state        # the host's own, changed in place by the host alone
        self._codec = codec
        self._send = send          # a task's frames to its worker
        self._cancel = cancel      # starts the cancel -> grace -> kill ladder of a task
        self._tasks: dict[str, Task] = {}            # by task id
        self._busy: dict[WorkerSlot, Task] = {}
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._alarm: asyncio.TimerHandle | None = None   # the earliest deadline of a task

    def load(self) -> tuple[int, int]:
        """How many workers are busy, and how many callers wait in line for one."""
        return len(self._busy), sum(not w.future.done() for w in self._waiters)

    async def call(self, op: str, data: Any, *, timeout: float, ctx: RunContext) -> Any:
        """Run ``op`` on a worker, now or once one is free, and return its result."""
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

    async def _queue(self, op: str, data: Any, ctx: RunContext, *, timeout: float) -> Task:
        """Wait in line for a worker (at most ``timeout`` s); the task dispatched for us.

        A freed worker is handed to the first in line at once, in the callback that freed it
        (hand_over): the next task leaves with no event-loop round trip in between. The run's
        own timeout starts when its task is dispatched.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._state.state != "ready":
                reason = f": {self._state.reason}" if self._state.reason else ""
                raise Unavailable(f"PTS {self._pts} is {self._state.state}{reason}")
            if (idle := self._idle_worker()) is not None:
                return self._dispatch(idle, op, data, ctx, timeout=timeout)
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RunTimeout(f"PTS {self._pts}: no worker free for the {op} "
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
                waiter.future.cancel()          # waited too long: skipped by hand_over
            elif (task := waiter.future.result()) is not None:   # raises a dispatch error
                return task

    def _leave_queue(self, waiter: _Waiter, reason: str) -> None:
        """A queued caller gives up: undo what was done for it meanwhile."""
        if not waiter.future.done():
            waiter.future.cancel()
        elif not waiter.future.cancelled() and waiter.future.exception() is None:
            task = waiter.future.result()
            if task is None:
                self.hand_over()                # woken to look again: the next one looks
            else:                               # dispatched already: nobody awaits it
                task.future.cancel()
                self._abort(task, reason)

    def hand_over(self) -> None:
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

    def wake_all(self) -> None:
        """The host's state changed: every queued caller looks again."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result(None)

    def _dispatch(self, worker: WorkerSlot, op: str, data: Any, ctx: RunContext, *,
                  timeout: float) -> Task:
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
        task = Task(msg_id, op, future, ctx, worker, deadline, timeout)
        self._busy[worker] = task
        self._tasks[msg_id] = task
        self._send(worker, frames)
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

    def _expire(self, task: Task) -> None:
        self._abort(task, f"{task.op} exceeded {task.timeout:g} s")
        task.future.set_exception(
            RunTimeout(f"PTS {self._pts}: {task.op} exceeded {task.timeout:g} s"))

    def _abort(self, task: Task, reason: str) -> None:
        """Cancel politely, then kill the worker if it does not stop within the grace."""
        if self._tasks.get(task.id) is task and task.settled is None:
            settled = task.settled = asyncio.get_running_loop().create_future()
            self._cancel(task, settled, reason)

    def _settle(self, task: Task, *, result: Any = None, error: Exception | None = None) -> None:
        self._tasks.pop(task.id, None)
        worker = task.worker
        if self._busy.get(worker) is task:
            del self._busy[worker]
            worker.served += 1
            if self._waiters:
                self.hand_over()
        if task.settled is not None and not task.settled.done():
            task.settled.set_result(None)
        if not task.future.done():
            if error is not None:
                task.future.set_exception(error)
            else:
                task.future.set_result(result)

    def on_outcome(self, worker: WorkerSlot, message: Message) -> None:
        """A worker's reply or error for its task."""
        task = self._tasks.get(message.re or "")
        if task is None or task.worker is not worker:
            log.warning("worker_reply_unmatched", pts=self._pts, worker=worker.index,
                        type=message.type)
            return
        if message.type == messages.TASK_REP:
            body = message.body
            self._settle(task, result=body.get("result") if isinstance(body, dict) else None)
            return
        remote = RemoteError.from_body(message.body)
        error_type = Cancelled if remote.code == ErrorCode.CANCELLED else PtsFailed
        self._settle(task, error=error_type(remote.message, pts_code=remote.code))

    def on_event(self, worker: WorkerSlot, message: Message) -> None:
        """A progress or log line of a worker's task, relayed into the run's context."""
        task, body = self._tasks.get(message.re or ""), message.body
        if task is None or task.worker is not worker or not isinstance(body, dict):
            return
        percent = body.get("percent")
        if message.type == messages.TASK_LOG:
            task.ctx.log(str(body.get("line", ""))[:16384])
        elif isinstance(percent, int | float) and not isinstance(percent, bool):
            task.ctx.progress(int(percent), str(body.get("message", ""))[:1000])

    def worker_lost(self, worker: WorkerSlot, reason: str, *, pid: int) -> None:
        """``worker``'s process ended: its task fails, and every queued caller looks again."""
        if (task := self._busy.get(worker)) is not None:
            self._settle(task, error=WorkerDied(
                f"worker died during the {task.op}: {reason}", pid=pid))
        self.wake_all()      # the state may have changed: every waiter looks again

    def close(self, reason: str) -> None:
        """The host stops: every queued caller looks again, and every task fails."""
        self.wake_all()
        if self._alarm is not None:
            self._alarm.cancel()
        for task in list(self._tasks.values()):   # a drained generation has none left
            self._settle(task, error=Unavailable(reason))
