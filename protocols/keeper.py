"""The keeper: the thread that stands in for a worker's main thread while a task runs long.

Owns the :class:`Keeper` thread, the :class:`Task` it watches, the :class:`Outbox` through
which a PTS reports progress and log lines from any thread, and the wake-up pipe between
them. It takes the socket only under the runtime's ``owner`` lock and through
:meth:`protocols.workerruntime.WorkerRuntime.stand_in`: it must not read or send messages
itself, nor run tasks. Imports only ``protocols`` and the stdlib (Python 3.8+).
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

from protocols import messages
from protocols.context import RunContext

if TYPE_CHECKING:
    from protocols.workerruntime import WorkerRuntime

EXIT_KEEPER_FAILED = 5
MAX_PENDING_LOGS = 1000       # log lines waiting to be sent; beyond, lines are dropped
URGENT_PENDING = 64           # this many waiting messages call the keeper in before its tick

Outgoing = Tuple[str, Any, Optional[str]]     # (message type, body, re)


def note(text: str) -> None:
    """One line on stderr: the daemon forwards the worker's stderr into its log."""
    sys.stderr.write("pns-worker[%d]: %s\n" % (os.getpid(), text))
    sys.stderr.flush()


class Outbox:
    """Progress and log messages from the PTS (any thread) to whoever holds the socket.

    A byte on a pipe wakes the keeper while it stands in (``listening``) or when messages pile
    up; otherwise the main thread sends them after the task, at no cost per message. Progress
    is coalesced and log lines are capped, so a chatty PTS cannot exhaust memory.
    """

    def __init__(self, wake_fd: int) -> None:
        self.wake_fd = wake_fd
        self._lock = threading.Lock()
        self._items = []  # type: List[Outgoing]
        self._logs = 0
        self._listening = False
        self.dropped = 0

    def put(self, item: Outgoing) -> None:
        with self._lock:
            kind = item[0]
            if kind == messages.TASK_PROGRESS and self._items and self._items[-1][0] == kind:
                self._items[-1] = item
                return
            if kind == messages.TASK_LOG and self._logs >= MAX_PENDING_LOGS:
                self.dropped += 1
                return
            self._items.append(item)
            self._logs += kind == messages.TASK_LOG
            count = len(self._items)
            wake = count == URGENT_PENDING or (count == 1 and self._listening)
        if wake:
            wake_up(self.wake_fd)

    def listen(self, on: bool) -> None:
        """Whether every first message should wake the socket's holder (the keeper)."""
        with self._lock:
            self._listening = on

    def take(self) -> List[Outgoing]:
        if not self._items:     # most tasks report nothing: no lock, no new list
            return []
        with self._lock:
            items, self._items, self._logs = self._items, [], 0
        return items


class Task:
    """The task being run; ``finished`` tells the keeper to hand the socket back."""

    __slots__ = ("ctx", "data", "finished", "id", "op")

    def __init__(self, task_id: str, op: str, data: Any, ctx: RunContext) -> None:
        self.id, self.op, self.data, self.ctx = task_id, op, data, ctx
        self.finished = False


class Keeper(threading.Thread):
    """Takes the socket over while a task runs for longer than a tick (see the module doc).

    It looks once a tick rather than being told of each task: waking a thread per task costs
    more than a short task's whole round trip.
    """

    def __init__(self, runtime: WorkerRuntime, *, tick: float) -> None:
        # daemon: a PTS that ignores cancel must not keep the process alive at exit
        super().__init__(name="keeper", daemon=True)
        self.runtime = runtime
        self.tick = tick

    def run(self) -> None:
        try:
            self.watch()
        except Exception:  # the thread's boundary: a worker without its keeper must not go on
            note("the keeper failed:\n%s" % traceback.format_exc().rstrip())
            os._exit(EXIT_KEEPER_FAILED)

    def watch(self) -> None:
        runtime, seen = self.runtime, None  # type: WorkerRuntime, Optional[Task]
        poller = select.poll()
        poller.register(runtime.wake_fd, select.POLLIN)
        while True:
            woken = bool(poller.poll(self.tick * 1000))
            if woken:
                drain_pipe(runtime.wake_fd)
            task = runtime.current
            if task is None or task.finished:
                seen = None
            elif task is not seen and not woken:
                seen = task          # running now; still running a tick later: stand in
            else:
                with runtime.owner:
                    if runtime.current is task and not task.finished:
                        runtime.stand_in(task)
                seen = None


def make_pipe() -> Tuple[int, int]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    return read_fd, write_fd


def wake_up(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):   # a full pipe holds wake-ups already
        os.write(fd, b"\0")


def drain_pipe(fd: int) -> None:
    # One read takes every wake-up byte there is; only a full buffer means there may be more.
    with contextlib.suppress(BlockingIOError):
        while len(os.read(fd, 4096)) == 4096:
            pass
