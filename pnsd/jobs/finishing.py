"""Finishing runs: moving a run's job to its final state, recording it, announcing it.

Owns the one verb that ends a run, :meth:`Finisher.finish` (success, failure, timeout or
dismissal alike: the run's ``error`` says which), the record it makes (a synchronous run with
group commit, an asynchronous one durably; a store that refuses fails the job with
``storage`` instead), the ``job_finished`` line and the rolling window of finished runs
(:mod:`pnsd.rolling`, for the ``stats`` operation), :meth:`Finisher.abandon` for a run the
daemon stops under, and the error a failed job's result answers. It must not start, cancel or
look up runs, nor hold them: :mod:`pnsd.jobs.scheduler` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import structlog

from pnsd.errors import Cancelled, DaemonError, StorageError
from pnsd.jobs.livejob import LiveJob, Phase
from pnsd.jobs.model import Job, Status
from pnsd.jobs.packed import Packed
from pnsd.jobs.store import JobStore
from pnsd.rolling import Rolling
from protocols.errors import ErrorCode

__all__ = ["Finisher", "failure_of"]

log = structlog.get_logger(__name__)


class Finisher:
    """Records and announces the outcomes of one scheduler's runs."""

    def __init__(self, store: JobStore, *, clock: Callable[[], float],
                 record_sync: bool) -> None:
        self.store = store
        self.clock = clock
        self.record_sync = record_sync
        self.rolling = Rolling()    # finished runs of the last minutes, for the stats op
        # Read once: the level is set before the daemon starts; no level check on every run.
        self._log_finished = log.is_enabled_for(logging.INFO)

    async def finish(self, live: LiveJob) -> None:
        """Move the run's job to the final state its ``error`` calls for (None: success),
        record it, then show it on the live job and announce it.

        An asynchronous job shows its outcome only once the outcome is recorded: a success
        that a full disk (or a crash) could undo is never reported. A synchronous run's record
        is group-committed after its reply (README: a crash may lose the latest ones), so it
        is settled in place and recorded without waiting when it fits its row.
        """
        live.phase = Phase.RECORDING
        blob = live.packed_result()
        final = live.job if live.job.sync else live.job.copy()
        error = live.error
        if error is None:
            final.succeed(self.clock())
        elif isinstance(error, Cancelled):
            final.dismiss(self.clock(), error.message)
        else:
            final.fail(self.clock(), error.code, error.message)
        if final.sync and (not self.record_sync
                           or self.store.record_inline(final, live.input_blob, blob)):
            recorded = final    # most synchronous runs: recorded without a coroutine
        else:
            recorded = await self._record(live, final, blob)
        if recorded is not live.job:
            vars(live.job).update(vars(recorded))
        live.publish()
        job = live.job
        self.rolling.add(job)
        if self._log_finished:    # skip building the line (every run)
            log.info("job_finished", job=job.id, pts=job.pts, status=job.status.value,
                     reason=job.reason or None, seconds=round(self.clock() - job.created, 6))

    async def _record(self, live: LiveJob, final: Job, blob: bytes | Packed | None) -> Job:
        """Store the outcome; if the store refuses, the job fails with ``storage`` instead."""
        if final.sync:      # recording on, and a blob needs a file (finish did the rest)
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


def failure_of(job: Job) -> DaemonError:
    """The error a failed or dismissed job answers when its result is asked for."""
    code = job.reason if job.reason in ErrorCode.ALL else ErrorCode.PTS_ERROR
    if job.status is Status.DISMISSED:
        code = ErrorCode.CANCELLED
    return DaemonError(job.message or f"job {job.id} {job.status.value}", code=code,
                       job=job.id, status=job.status.value)
