"""A job in motion: its record, the context its PTS sees, its event log and its outcome.

Owns :class:`LiveJob` and what ties a run's ``ctx`` to its events (progress and log lines from
any thread land in the event loop), and the packing of inputs and results. It must not run,
queue or record jobs: :mod:`pnsd.jobs.scheduler` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from pnsd.errors import DaemonError, PtsFailed
from pnsd.jobs.events import EventLog
from pnsd.jobs.model import Job, Status
from pnsd.registry import Generation
from protocols.context import RunContext


@dataclass
class LiveJob:
    job: Job
    ctx: RunContext
    events: EventLog | None   # None: an inline run no one could watch (watchers get a summary)
    task: asyncio.Task[Any] | None = None    # the task awaiting the host, for cancel
    abort: Callable[[str], None] | None = None   # cancels a run answered by callback instead
    generation: Generation | None = None     # the generation the run was admitted to
    cancel_requested: bool = False
    waiting: bool = False         # an accepted submission waiting for a slot in its task
    finishing: bool = False       # the outcome is being recorded: too late to cancel
    input_blob: bytes = b""       # a synchronous run's input, recorded with its outcome
    result_bytes: int = 0         # the packed result's size
    result_kept: bool = True      # False once a large result was dropped from memory
    cancel_reason: str = "cancelled on request"
    result: Any = None
    error: DaemonError | None = None

    @classmethod
    def watched(cls, job: Job, generation: Generation, *,
                clock: Callable[[], float]) -> LiveJob:
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

        return cls(job, RunContext(job.id, progress, log), events, generation=generation)

    @classmethod
    def quiet(cls, job: Job, generation: Generation) -> LiveJob:
        """An inline run whose PTS takes no ``ctx``: nothing to report until it ends."""
        return cls(job, RunContext(job.id), None, generation=generation)

    def publish(self) -> None:
        """Tell watchers the job's status (if it has an event log)."""
        if self.events is not None:
            self.events.status(self.job)

    def packed_result(self) -> bytes | None:
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


def pack(value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise PtsFailed(f"the PTS returned a value that cannot be encoded: {exc}") from exc


def unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


def _call_in_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn()
    else:
        loop.call_soon_threadsafe(fn)
