"""Finishing runs: recording each outcome, announcing it, and keeping finished jobs a while.

Owns the finished jobs kept in memory for late watchers and quick results, moving a run's job
to its final state, recording it (a synchronous run with group commit, an asynchronous one
durably; a store that refuses fails the job with ``storage`` instead), the ``job_finished``
line, dropping large results from memory (and forgetting deleted jobs), and the error a failed
job's result answers. It must not start, cancel or look up runs: :mod:`pnsd.jobs.scheduler` does,
and shares its map of live jobs with it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from pnsd.errors import Cancelled, DaemonError, StorageError
from pnsd.jobs.model import Job, Status
from pnsd.jobs.livejob import LiveJob
from pnsd.jobs.store import JobStore
from protocols.errors import ErrorCode

__all__ = ["FINISHED_KEPT", "Finisher", "Outcome", "failure_of", "outcome"]

log = structlog.get_logger(__name__)

FINISHED_KEPT = 1024  # finished jobs whose event logs stay in memory for late watchers
KEEP_RESULT_BYTES = 64 * 1024  # larger results of finished jobs are read from the store

Outcome = tuple[Job, Any]   # a finished synchronous run: its job and result


class Finisher:
    """Records, announces and retires the runs of one scheduler."""

    def __init__(self, store: JobStore, live: dict[str, LiveJob], *,
                 clock: Callable[[], float], record_sync: bool) -> None:
        self.store = store
        self.live = live            # the scheduler's live jobs, by id
        self.finished: OrderedDict[str, LiveJob] = OrderedDict()
        self.clock = clock
        self.record_sync = record_sync

    def conclude(self, live: LiveJob, blob: bytes | None) -> Outcome | Awaitable[Outcome]:
        """Record and retire a finished synchronous run, now unless its result needs a file
        written (then an awaitable); a failed run's error is raised."""
        if self.record_sync and not self.store.fits_inline(blob):
            return self.finish_later(live, blob)
        self.settle(live.job, live.error)
        if self.record_sync:
            self.store.record_now(live.job, live.input_blob, blob)
        self.announce(live)
        return outcome(live, self.retire(live))

    async def finish_later(self, live: LiveJob, blob: bytes | None) -> Outcome:
        """The rest of :meth:`conclude` once its record needs a file written."""
        self.live[live.job.id] = live
        try:
            await self.finish(live, blob)
        finally:
            result = self.retire(live)
        return outcome(live, result)

    async def finish(self, live: LiveJob, blob: bytes | None) -> None:
        """Record the run's outcome, then show it on the live job."""
        # The live job shows its outcome only once the outcome is recorded: a success that a
        # full disk (or a crash) could undo is never reported.
        live.finishing = True
        final = live.job.copy()
        self.settle(final, live.error)
        vars(live.job).update(vars(await self._record(live, final, blob)))
        self.announce(live)

    def settle(self, job: Job, error: DaemonError | None) -> None:
        """Move ``job`` to the final state ``error`` (None: success) calls for."""
        if error is None:
            job.succeed(self.clock())
        elif isinstance(error, Cancelled):
            job.dismiss(self.clock(), error.message)
        else:
            job.fail(self.clock(), error.code, error.message)

    def announce(self, live: LiveJob) -> None:
        job = live.job
        live.publish()
        if log.is_enabled_for(logging.INFO):    # skip building the line (every run)
            log.info("job_finished", job=job.id, pts=job.pts, status=job.status.value,
                     reason=job.reason or None, seconds=round(self.clock() - job.created, 6))

    async def _record(self, live: LiveJob, final: Job, blob: bytes | None) -> Job:
        """Store the outcome; if the store refuses, the job fails with ``storage`` instead."""
        if final.sync:
            if self.record_sync:
                await self.store.record(final, live.input_blob, blob)
            return final
        try:
            await self.store.finish(final, blob, durable=True)
            return final
        except StorageError as exc:
            failed = live.job.copy()
            failed.fail(self.clock(), ErrorCode.STORAGE,
                        f"the outcome could not be recorded: {exc.message}")
            live.error, live.result = exc, None
            try:
                await self.store.finish(failed, None, durable=True)
            except StorageError:
                log.error("job_record_failed", job=failed.id, error=exc.message)
            return failed

    async def abandon(self, live: LiveJob) -> None:
        """The daemon is stopping under this run: record it as failed, without waiting."""
        job = live.job
        if not job.is_finished:
            job.fail(self.clock(), ErrorCode.UNAVAILABLE, "the daemon stopped during the run")
            live.publish()
            if not job.sync:
                await self.store.finish(job, None, durable=False)
            elif self.record_sync:
                await self.store.record(job, live.input_blob, None)

    def forget(self, job_id: str) -> None:
        """Drop a finished job kept in memory (it is being deleted)."""
        self.finished.pop(job_id, None)

    def retire(self, live: LiveJob) -> Any:
        """Move a finished run to the finished jobs; returns its result (which may be dropped
        from memory here)."""
        result = live.result
        self.live.pop(live.job.id, None)
        # Finished jobs stay here for late watchers and quick results; large results are read
        # back from the store instead, or a thousand 16 MiB results would pin 16 GiB.
        live.input_blob = b""
        if live.result_bytes > KEEP_RESULT_BYTES:
            live.result, live.result_kept = None, False
        self.finished[live.job.id] = live
        while len(self.finished) > FINISHED_KEPT:
            self.finished.popitem(last=False)
        return result


def outcome(live: LiveJob, result: Any) -> Outcome:
    """A finished synchronous run's job and result, or its error raised."""
    if live.error is not None:
        raise live.error
    return live.job, result


def failure_of(job: Job) -> DaemonError:
    """The error a failed or dismissed job answers when its result is asked for."""
    code = job.reason if job.reason in ErrorCode.ALL else ErrorCode.PTS_ERROR
    if job.status is Status.DISMISSED:
        code = ErrorCode.CANCELLED
    error = DaemonError(job.message or f"job {job.id} {job.status.value}", job=job.id,
                        status=job.status.value)
    error.code = code
    return error
