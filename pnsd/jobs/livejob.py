"""Jobs in motion: :class:`LiveJob` (one run, its context, events and outcome) and
:class:`LiveJobs`, the one table that holds them.

Owns what a run is while it runs (the phase it is in, the task that runs it, the ``ctx`` its
PTS sees, tied to its event log so that progress and log lines from any thread land in the
event loop, and its outcome), the table of live runs and of finished ones kept a while for
late watchers and quick results (inputs and results are packed by :mod:`pnsd.jobs.packed`).
It must not run, queue or record jobs: :mod:`pnsd.jobs.scheduler` does, and is the only user
of the table.
"""

from __future__ import annotations

import asyncio
import enum
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pnsd.errors import DaemonError
from pnsd.jobs.events import EventLog
from pnsd.jobs.model import Job, Status
from pnsd.jobs.packed import Packed, pack, unpack
from pnsd.registry import Generation
from protocols.context import RunContext

__all__ = ["FINISHED_KEPT", "LiveJob", "LiveJobs", "Phase", "pack", "unpack"]

# Finished jobs stay in memory for late watchers and quick results: the latest FINISHED_KEPT,
# holding at most KEPT_RESULTS_BYTES of results between them (each of at most
# KEEP_RESULT_BYTES; larger ones are read from the store). A client that submits a batch and
# then collects it reads the results of up to that many jobs without a database read each.
FINISHED_KEPT = 16384
KEPT_RESULTS_BYTES = 32 * 2**20
KEEP_RESULT_BYTES = 64 * 1024
_ENDED = RunContext()          # the context a finished run keeps (its own is let go)


class Phase(enum.Enum):
    """Where a live run is; the job's own status says where it stands for everybody else."""

    NEW = "new"                # admitted; its task (an asynchronous job's) has not begun
    QUEUED = "queued"          # waiting for a slot, in its task: a cancel takes it out
    RUNNING = "running"        # on its host
    STOPPING = "stopping"      # cancelled on request: the host is stopping it
    RECORDING = "recording"    # its outcome is being recorded: too late to cancel
    DONE = "done"


@dataclass(eq=False, slots=True)
class LiveJob:
    job: Job
    generation: Generation         # the generation the run was admitted to
    ctx: RunContext
    events: EventLog | None        # None once a finished run's log had nothing to keep
    input_blob: bytes | Packed = b""   # a synchronous run's input, recorded with its outcome
    phase: Phase = Phase.NEW
    task: asyncio.Task[Any] | None = None    # the task running it, which a cancel cancels
    cancel_reason: str = "cancelled on request"
    result: Any = None
    error: DaemonError | None = None
    result_bytes: int = 0          # the packed result's size
    result_kept: bool = True       # False once a large result was dropped from memory

    @classmethod
    def of(cls, job: Job, generation: Generation, *, clock: Callable[[], float]) -> LiveJob:
        """A run with an event log its ``ctx`` reports progress and log lines to."""
        events = EventLog(job.id)
        loop = asyncio.get_running_loop()

        def progress(percent: int, message: str) -> None:
            def apply() -> None:
                if job.status is Status.RUNNING:
                    job.report_progress(clock(), percent, message)
                    events.progress(job)
            _call_in_loop(loop, apply)

        def log(line: str) -> None:
            _call_in_loop(loop, lambda: events.log(line))

        return cls(job, generation, RunContext(job.id, progress, log), events)

    def publish(self) -> None:
        """Tell watchers the job's status."""
        if self.events is not None:
            self.events.status(self.job)

    def stop(self, reason: str) -> bool:
        """Ask a running run to stop (its task is cancelled, its ``ctx`` says so); False when
        it is not running, or stopping already."""
        if self.phase is not Phase.RUNNING:
            return False
        self.phase = Phase.STOPPING
        self.cancel_reason = reason
        self.ctx.cancel()
        if self.task is not None:
            self.task.cancel()
        return True

    def packed_result(self) -> bytes | Packed | None:
        """The result packed for its record (its size noted); None when the run failed, or
        when the result cannot be packed, which becomes the run's error."""
        if self.error is not None:
            return None
        try:
            blob = pack(self.result)
        except DaemonError as exc:
            self.error = exc
            return None
        self.result_bytes = len(blob)
        return blob


class LiveJobs:
    """The runs in motion by job id, and the latest finished ones: at most ``kept`` of them,
    holding at most ``kept_bytes`` of results between them (the oldest go first)."""

    def __init__(self, *, kept: int = FINISHED_KEPT, kept_bytes: int = KEPT_RESULTS_BYTES) -> None:
        self._running: dict[str, LiveJob] = {}
        self._finished: OrderedDict[str, LiveJob] = OrderedDict()
        self._kept = kept                   # finished jobs kept at most
        self._kept_bytes = kept_bytes       # bytes of their results (packed) kept at most
        self._result_bytes = 0              # bytes of the results kept now

    def add(self, live: LiveJob) -> None:
        self._running[live.job.id] = live

    def find(self, job_id: str) -> LiveJob | None:
        return self._running.get(job_id) or self._finished.get(job_id)

    def running(self) -> Iterator[LiveJob]:
        """The runs in motion (a copy: callers may cancel them meanwhile)."""
        return iter(list(self._running.values()))

    def drop(self, live: LiveJob) -> None:
        """Forget a run that did not run (it stays accepted in the store, or never was)."""
        self._running.pop(live.job.id, None)

    def retire(self, live: LiveJob) -> Any:
        """Move a finished run to the finished jobs; returns its result, which is dropped from
        memory here when large (a thousand 16 MiB results would pin 16 GiB): it is read back
        from the store instead. The oldest finished jobs go once more than ``kept`` are, or
        their results add up to more than ``kept_bytes``."""
        result = live.result
        self._running.pop(live.job.id, None)
        live.phase = Phase.DONE
        # A finished job keeps no task, context or input alive, nor an event log that was
        # never watched nor reported to (its status says all it held): of the thousands kept,
        # each is small, and what it held is let go now, while it is fresh in memory.
        live.task, live.input_blob, live.ctx = None, b"", _ENDED
        if live.events is not None and not live.events.buffered:
            live.events = None
        if live.result_bytes > KEEP_RESULT_BYTES:
            live.result, live.result_kept = None, False
        self.forget(live.job.id)
        self._finished[live.job.id] = live
        self._result_bytes += _kept_bytes(live)
        while self._finished and (len(self._finished) > self._kept
                                  or self._result_bytes > self._kept_bytes):
            self._result_bytes -= _kept_bytes(self._finished.popitem(last=False)[1])
        return result

    def forget(self, job_id: str) -> None:
        """Drop a finished job kept in memory (it is being deleted)."""
        live = self._finished.pop(job_id, None)
        if live is not None:
            self._result_bytes -= _kept_bytes(live)

    def forget_all(self, job_ids: list[str]) -> None:
        """Drop the finished jobs the store removed by itself (retention, cleanup)."""
        for job_id in job_ids:
            self.forget(job_id)

    @property
    def kept(self) -> tuple[int, int]:
        """How many finished jobs are kept, and the bytes of their results."""
        return len(self._finished), self._result_bytes


def _kept_bytes(live: LiveJob) -> int:
    return live.result_bytes if live.result_kept else 0


def _call_in_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn()
    else:
        loop.call_soon_threadsafe(fn)
