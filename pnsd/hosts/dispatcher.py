"""The runs of a worker host: which run each worker serves, who waits for one, and deadlines.

Owns the runs (waiting in the host's line, then tasks on a worker, by task id and by worker),
dispatching one task at a time per worker (least-used idle worker first), or with the PTS's
``prefetch = N`` up to N more queued at a worker behind its current one (the worker holding the
fewest first), the FIFO line of runs waiting for a worker (a freed worker takes the first in
line in the very callback that frees it), one deadline alarm per host, and answering each run
from its worker's reply, with progress and log lines relayed into the run's context; for an
idempotent PTS, the runs of a worker that died or (remote) went silent go back first in line,
once. A run is answered at once, in the callback that settles it, by completing the future its
caller awaits (:meth:`Dispatcher.call`); the callback calls nothing above this module. It must
not spawn, signal or stop processes, own sockets or background tasks, or change the host's
state: :class:`pnsd.hosts.worker.WorkerHost` does all that and hands this module its state to
read, its outbox and its cancel ladder.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog

from pnsd.errors import (
    BadRequest,
    Cancelled,
    DaemonError,
    PtsFailed,
    RunTimeout,
    TooLarge,
    Unavailable,
    WorkerDied,
)
from pnsd.hosts.base import HostState
from pnsd.hosts.workerslot import WorkerSlot
from protocols import messages
from protocols.codec import Codec, Message, new_message_id
from protocols.context import RunContext
from protocols.errors import ErrorCode, ProtocolError, RemoteError

__all__ = ["Dispatcher", "Reply", "Run"]

log = structlog.get_logger(__name__)

# How a run is answered: (result, None) or (None, the error it failed with); exactly once.
Reply = Callable[[Any, DaemonError | None], None]


@dataclass(eq=False)
class Run:
    """One call on a worker host: in the line until a worker takes it, then that worker's task."""

    op: str
    data: Any
    ctx: RunContext
    timeout: float
    deadline: float                  # loop time: by when a worker must take it, then finish it
    reply: Reply | None              # None once answered
    id: str = ""                     # the task's message id, once dispatched
    worker: WorkerSlot | None = None
    settled: asyncio.Future[None] | None = None   # made by a cancel ladder: the worker is free
    ignored: int = 0                 # events of its task ignored as malformed (logged once)
    retried: bool = False            # went to another worker once after its worker was lost

    def answer(self, result: Any, error: DaemonError | None) -> None:
        """Hand the outcome to the caller, unless it was answered already."""
        reply, self.reply = self.reply, None
        if reply is not None:
            reply(result, error)


class Dispatcher:
    """Runs the calls of one worker host's callers on its workers, one task per worker, or
    ``1 + prefetch`` when the PTS lets a worker hold queued tasks.

    Prefetch 0 (the default) means a short run never waits behind a long one while any worker
    could take it: a run stays in the host's line until a worker is free. With prefetch N a
    worker is sent up to N more tasks while it runs one, which saves the round trip between
    tasks but binds each queued task to that worker: it waits for whatever runs there, however
    long (head-of-line blocking), even if another worker frees up first.
    """

    def __init__(self, pts: str, *, workers: list[WorkerSlot], state: HostState,
                 codec_for: Callable[[WorkerSlot], Codec],
                 send: Callable[[WorkerSlot, list[bytes]], None],
                 cancel: Callable[[Run, asyncio.Future[None], str], None],
                 retry: bool = False, prefetch: int = 0) -> None:
        self._pts = pts
        self._retry = retry        # idempotent PTS: a lost worker's run goes to another, once
        self._workers = workers
        self._state = state        # the host's own, changed in place by the host alone
        self._codec_for = codec_for    # how a task is encoded for its worker (local or remote)
        self._send = send          # a task's frames to its worker
        self._cancel = cancel      # starts the cancel -> grace -> kill ladder of a task
        self._tasks: dict[str, Run] = {}            # dispatched runs by task id
        self._depth = 1 + prefetch                  # tasks a worker may hold at once
        # workers that answered a prefetched task busy (a runtime that holds no queue, or
        # one stopping): they get one task at a time from then on, so no refusal loops
        self._one_at_a_time: set[WorkerSlot] = set()
        # each busy worker's tasks, in the order sent (the first is the one it runs)
        self._busy: dict[WorkerSlot, list[Run]] = {}
        self._line: collections.deque[Run] = collections.deque()
        self._alarm: asyncio.TimerHandle | None = None   # the earliest deadline of a run

    def load(self) -> tuple[int, int]:
        """How many workers are busy, and how many runs wait in line for one (or, prefetched,
        at a worker behind its current task)."""
        held = sum(len(runs) - 1 for runs in self._busy.values())
        return len(self._busy), held + sum(run.reply is not None for run in self._line)

    def is_busy(self, worker: WorkerSlot) -> bool:
        """Whether ``worker`` is serving a run now."""
        return worker in self._busy

    def start(self, op: str, data: Any, *, timeout: float, ctx: RunContext,
              reply: Reply) -> Run:
        """Run ``op`` on a worker, now if one is idle, else once one frees up.

        A run waits in line at most ``timeout`` seconds; its own timeout starts when a worker
        takes it. ``reply`` gets the outcome exactly once, unless :meth:`cancel` answered first.
        Raises Unavailable (the host is not ready), BadRequest (``data`` cannot be encoded) or
        TooLarge (the task would be over the worker's message limit).
        """
        if self._state.state != "ready":
            raise self._not_ready()
        now = asyncio.get_running_loop().time()     # read once: a dispatch now uses it too
        deadline = now + timeout
        run = Run(op, data, ctx, timeout, deadline, reply)
        worker = self._idle_worker()
        if worker is not None:
            self._dispatch(worker, run, now)
        else:
            self._line.append(run)
            self._arm(deadline)
        return run

    async def call(self, op: str, data: Any, *, timeout: float, ctx: RunContext) -> Any:
        """:meth:`start`, awaited: the run's result (a cancelled caller cancels the run)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        run = self.start(op, data, timeout=timeout, ctx=ctx, reply=partial(_resolve, future))
        try:
            return await future
        except asyncio.CancelledError:
            self.cancel(run, f"{op} cancelled")
            raise

    def cancel(self, run: Run, reason: str) -> None:
        """Take ``run`` out of the line or off its worker (the cancel ladder); answer it now."""
        if run.worker is not None:
            self._abort(run, reason)
        run.answer(None, Cancelled(reason))

    def _idle_worker(self) -> WorkerSlot | None:
        """The ready worker holding the fewest tasks (below its depth), the least used of
        those, or None."""
        if self._state.state != "ready":
            return None
        best: WorkerSlot | None = None
        best_key = (self._depth, 0)
        for worker in self._workers:
            key = (len(self._busy.get(worker, ())), worker.served)
            depth = 1 if worker in self._one_at_a_time else self._depth
            if worker.ready and key[0] < depth and (best is None or key < best_key):
                best, best_key = worker, key
        return best

    def hand_over(self) -> None:
        """Dispatch the first runs in line to idle workers, now."""
        now = asyncio.get_running_loop().time()
        while self._line and (worker := self._idle_worker()) is not None:
            run = self._line.popleft()
            if run.reply is None:               # cancelled or timed out meanwhile
                continue
            try:
                self._dispatch(worker, run, now)
            except (BadRequest, TooLarge) as exc:
                run.answer(None, exc)

    def recheck(self) -> None:
        """The host's state or its workers changed: dispatch what can be, fail the line if the
        host cannot serve any more."""
        if self._state.state == "ready":
            self.hand_over()
            return
        while self._line:
            self._line.popleft().answer(None, self._not_ready())

    def _not_ready(self) -> Unavailable:
        reason = f": {self._state.reason}" if self._state.reason else ""
        return Unavailable(f"PTS {self._pts} is {self._state.state}{reason}")

    def _dispatch(self, worker: WorkerSlot, run: Run, now: float) -> None:
        """Send ``run`` to ``worker``; its own timeout runs from ``now`` (loop time)."""
        msg_id = new_message_id()
        body = {"op": run.op, "data": run.data, "timeout": run.timeout, "job": run.ctx.job_id}
        try:
            frames = self._codec_for(worker).encode(messages.TASK_REQ, body, msg_id=msg_id)
        except ProtocolError as exc:
            if exc.code == ErrorCode.TOO_LARGE:    # the worker's socket would drop it
                raise TooLarge(f"the input is too large for the worker: {exc.message}",
                               **exc.details) from exc
            raise BadRequest(f"the input cannot be encoded: {exc.message}") from exc
        run.id, run.worker = msg_id, worker
        run.deadline = now + run.timeout
        self._busy.setdefault(worker, []).append(run)
        self._tasks[msg_id] = run
        self._send(worker, frames)
        self._arm(run.deadline)

    def _arm(self, deadline: float) -> None:
        """One alarm per host, at the earliest deadline: a timer per run costs every run, and
        with one timeout per PTS the next deadline is almost always later than the alarm."""
        if self._alarm is None or deadline < self._alarm.when():
            if self._alarm is not None:
                self._alarm.cancel()
            self._alarm = asyncio.get_running_loop().call_at(deadline, self._on_alarm, deadline)

    def _on_alarm(self, when: float) -> None:
        """Expire every run due by ``when``; then wait for the earliest deadline left."""
        self._alarm = None
        earliest: float | None = None
        for run in [*self._tasks.values(), *self._line]:
            if run.reply is None:           # answered already (a task: settling)
                continue
            if run.deadline <= when:
                self._expire(run)
            elif earliest is None or run.deadline < earliest:
                earliest = run.deadline
        if earliest is not None:
            self._arm(earliest)

    def _expire(self, run: Run) -> None:
        if run.worker is None:
            run.answer(None, RunTimeout(
                f"PTS {self._pts}: no worker free for the {run.op} within {run.timeout:g} s "
                f"({len(self._busy)} busy, {sum(not w.ready for w in self._workers)} restarting)"))
            return
        self._abort(run, f"{run.op} exceeded {run.timeout:g} s")
        run.answer(None, RunTimeout(f"PTS {self._pts}: {run.op} exceeded {run.timeout:g} s"))

    def _abort(self, run: Run, reason: str) -> None:
        """Cancel politely, then kill the worker if it does not stop within the grace."""
        if self._tasks.get(run.id) is run and run.settled is None:
            settled = run.settled = asyncio.get_running_loop().create_future()
            self._cancel(run, settled, reason)

    def _settle(self, run: Run, *, result: Any = None, error: DaemonError | None = None) -> None:
        """A task ended: its worker is free (and takes the next in line), then it is answered."""
        self._tasks.pop(run.id, None)
        worker = run.worker
        held = self._busy.get(worker) if worker is not None else None
        if worker is not None and held is not None and run in held:
            held.remove(run)
            if not held:
                del self._busy[worker]
            worker.served += 1
            if self._line:
                self.hand_over()
        if run.settled is not None and not run.settled.done():
            run.settled.set_result(None)
        run.answer(result, error)

    def on_outcome(self, worker: WorkerSlot, message: Message) -> None:
        """A worker's reply or error for its task."""
        run = self._tasks.get(message.re or "")
        if run is None or run.worker is not worker:
            log.warning("worker_reply_unmatched", pts=self._pts, worker=worker.index,
                        type=message.type)
            return
        if message.type == messages.TASK_REP:
            body = message.body if isinstance(message.body, dict) else {}
            events = body.get("events")
            if isinstance(events, list):    # the task's progress and log lines, in order
                for event in events:
                    if isinstance(event, list) and len(event) == 2:
                        self._apply_event(run, *event)
            self._settle(run, result=body.get("result"))
            return
        remote = RemoteError.from_body(message.body)
        if remote.code == ErrorCode.BUSY and self._busy[worker][0] is not run:
            self._hand_back(worker, run)     # a prefetched task the worker would not hold
            return
        error_type = Cancelled if remote.code == ErrorCode.CANCELLED else PtsFailed
        self._settle(run, error=error_type(remote.message, pts_code=remote.code))

    def _hand_back(self, worker: WorkerSlot, run: Run) -> None:
        """Put a task its worker refused as busy back at the head of the line."""
        del self._tasks[run.id]
        self._busy[worker].remove(run)
        self._one_at_a_time.add(worker)
        run.id, run.worker = "", None
        self._line.appendleft(run)
        self.hand_over()

    def on_event(self, worker: WorkerSlot, message: Message) -> None:
        """A progress or log line of a worker's task, relayed into the run's context."""
        run = self._tasks.get(message.re or "")
        if run is not None and run.worker is worker:
            self._apply_event(run, message.type, message.body)

    def _apply_event(self, run: Run, kind: Any, body: Any) -> None:
        if not isinstance(body, dict):
            return
        if kind == messages.TASK_LOG:
            run.ctx.log(str(body.get("line", ""))[:16384])
        elif kind == messages.TASK_PROGRESS:
            percent = body.get("percent")
            if isinstance(percent, bool) or not isinstance(percent, int | float) or (
                    not math.isfinite(percent)):
                self._ignore(run, f"progress percent {percent!r} is not a finite number")
                return
            run.ctx.progress(int(percent), str(body.get("message", ""))[:1000])

    def _ignore(self, run: Run, reason: str) -> None:
        """A bad event of a task: the task carries on; the first one of a run is logged."""
        run.ignored += 1
        if run.ignored == 1:
            log.warning("worker_event_ignored", pts=self._pts, job=run.ctx.job_id, reason=reason)

    def worker_lost(self, worker: WorkerSlot, reason: str, *, pid: int) -> None:
        """``worker`` ended (or a remote one left): its current task and any prefetched fail,
        except that for an idempotent PTS a run not retried yet goes back first in line (once,
        in order); the line is looked at again."""
        for run in reversed(self._busy.get(worker, [])):
            if self._retry and run.op == "run" and not run.retried and run.settled is None:
                self._requeue(run, worker, reason)
            else:
                self._settle(run, error=WorkerDied(
                    f"worker died during the {run.op}: {reason}", pid=pid))
        self.recheck()

    def _requeue(self, run: Run, worker: WorkerSlot, reason: str) -> None:
        held = self._busy[worker]
        held.remove(run)
        if not held:
            del self._busy[worker]
        self._tasks.pop(run.id, None)
        log.warning("run_requeued", pts=self._pts, job=run.ctx.job_id, reason=reason)
        run.retried, run.worker, run.id = True, None, ""
        self._line.appendleft(run)
        self._arm(run.deadline)

    def close(self, reason: str) -> None:
        """The host stops: the line is failed, and so is every task."""
        self.recheck()
        if self._alarm is not None:
            self._alarm.cancel()
        for run in list(self._tasks.values()):   # a drained generation has none left
            self._settle(run, error=Unavailable(reason))


def _resolve(future: asyncio.Future[Any], result: Any, error: DaemonError | None) -> None:
    if future.done():           # its awaiting caller was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
