"""The recording of finished synchronous runs: one insert each, group-committed, never
awaited by the run's caller.

Owns the rows gathered for their hand-over to the writer thread (a few milliseconds, or a
batch, then one write), the writing of their large blobs on the writer thread just before
their insert, and the back-pressure on blob bytes not yet written. It is the
:class:`pnsd.jobs.store.JobStore`'s mixin and must not open, read or trim the database
itself, nor decode blobs: it reaches the writer only through the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from pnsd.errors import Conflict, StorageError
from pnsd.jobs import jobsql
from pnsd.jobs.blobfiles import write_blobs
from pnsd.jobs.model import Job, Status
from pnsd.jobs.packed import Packed
from pnsd.jobs.storedb import Kind, Writer
from pnsd.jobs.trimming import Trimmer

log = structlog.get_logger(__name__)


class SyncRecords:
    """Records of finished synchronous runs, for a store that gives the writer and files."""

    RECORD_DELAY = 0.020  # seconds records of finished sync runs gather before the hand-over
    RECORD_BATCH = 256    # ... or this many of them
    # Bytes of blob files a record may leave for the writer: past it, recording waits, so
    # that a disk slower than the requests bounds the daemon's memory, not the queue.
    FILE_BACKLOG = 32 * 2**20

    # the store's, set by its __init__
    node: str
    _path: Path
    _writer: Writer | None
    _trimmer: Trimmer
    _records: list[dict[str, Any]]   # finished sync runs, not handed over yet
    _hand_over_timer: asyncio.TimerHandle | None
    _unwritten: list[tuple[Future[Any], int]]   # record ops with blob files
    _inline_limit: int

    if TYPE_CHECKING:   # the store's own methods, which this part calls
        def fits_inline(self, blob: bytes | Packed | None) -> bool: ...
        def _queued_writer(self) -> Writer: ...
        def _grew(self, size: int) -> None: ...
        def _job_dir(self, job_id: str) -> Path: ...

    async def record(self, job: Job, input_blob: bytes | Packed,
                     result_blob: bytes | Packed | None) -> None:
        """Record a finished synchronous run in one insert, group-committed, not awaited: its
        caller has the outcome already, so nothing waits for the commit (or for blobs to reach
        the disk); a crash may lose the latest such records, never an acknowledged one.

        Blobs too large for the row are written by the writer thread, from the values in
        memory (never joined into one buffer), just before the row's insert: a write that
        fails (a full disk) records this job as failed with ``storage`` and leaves no file.
        """
        if self.record_inline(job, input_blob, result_blob):    # most: nothing to wait for
            return
        row = self._record_row(job, input_blob, result_blob)
        files: dict[str, bytes | Packed] = {}
        for name, blob in (("input", input_blob), ("result", result_blob)):
            if self.fits_inline(blob):
                row.update({name: None if blob is None else bytes(blob), f"{name}_file": 0})
            else:
                assert blob is not None
                row.update({name: None, f"{name}_file": 1})
                files[name] = blob
        loop = asyncio.get_running_loop()
        forget = partial(loop.call_soon_threadsafe, self._trimmer.forget, [job.id])
        op = self._queued_writer().submit(
            Kind.WRITE, partial(_insert_with_files, self._job_dir(job.id), files, row, forget),
            durable=False, what=f"record job {job.id}")
        assert op.future is not None
        self._grew(row["input_size"] + row["result_size"])
        await self._within_backlog(op.future, sum(len(blob) for blob in files.values()))

    async def _within_backlog(self, future: Future[Any], size: int) -> None:
        """Note a record's unwritten files; wait while more than FILE_BACKLOG bytes are."""
        self._unwritten = [(f, n) for f, n in self._unwritten if not f.done()]
        self._unwritten.append((future, size))
        while sum(n for _f, n in self._unwritten) > self.FILE_BACKLOG and len(self._unwritten) > 1:
            oldest, _size = self._unwritten.pop(0)
            await asyncio.wait({asyncio.wrap_future(oldest)})

    def record_inline(self, job: Job, input_blob: bytes | Packed,
                      result_blob: bytes | Packed | None) -> bool:
        """:meth:`record` for a run whose blobs both fit its row (most runs), called without a
        coroutine: queued now, nothing to write or wait for. False, recording nothing, when
        a blob needs a file: :meth:`record` then. (:meth:`fits_inline`'s test, spelled out:
        this runs for every recorded run.)"""
        limit = self._inline_limit
        if len(input_blob) > limit or (result_blob is not None and len(result_blob) > limit):
            return False
        row = self._record_row(job, input_blob, result_blob)
        row.update(input=bytes(input_blob), input_file=0,
                   result=None if result_blob is None else bytes(result_blob), result_file=0)
        self._queue_record(row)
        return True

    def _record_row(self, job: Job, input_blob: bytes | Packed,
                    result_blob: bytes | Packed | None) -> dict[str, Any]:
        if not job.is_finished:
            raise Conflict(f"job {job.id} is {job.status.value}, not finished", job=job.id)
        job.node = self.node
        job.input_size = len(input_blob)
        job.result_size = 0 if result_blob is None else len(result_blob)
        return job.to_row()

    def _queue_record(self, row: dict[str, Any]) -> None:
        if self._writer is None:
            raise StorageError(f"job store {self._path} is not open")
        # Rows gathered for a few milliseconds go to the writer thread as one write: a
        # hand-over (a thread wake-up, and the GIL passed back and forth) per run costs more
        # than the insert. Every other op hands them over first (_queued_writer), so reads
        # and later writes still see them in order.
        if not self._records:
            self._hand_over_timer = asyncio.get_running_loop().call_later(
                self.RECORD_DELAY, self._hand_over)
        self._records.append(row)
        if len(self._records) >= self.RECORD_BATCH:
            self._hand_over()
        self._grew(row["input_size"] + row["result_size"])

    def _hand_over(self) -> None:
        if self._hand_over_timer is not None:
            self._hand_over_timer.cancel()
            self._hand_over_timer = None
        rows, self._records = self._records, []
        if not rows:
            return
        if self._writer is None:       # closed in between: they were never acknowledged
            log.warning("records_dropped", count=len(rows), reason="store closed")
            return
        self._writer.submit_nowait(partial(jobsql.insert_many, rows),
                                   what=f"record {len(rows)} jobs")



def _insert_with_files(job_dir: Path, files: dict[str, bytes | Packed], row: dict[str, Any],
                       forget: Callable[[], Any], conn: Any) -> None:
    """On the writer thread: a synchronous run's blob files, then its row. If a file cannot
    be written, the row records the job as failed (``storage``), without input or result,
    and the daemon forgets the success it holds in memory (``forget``): the job's result is
    then that error, never a missing or partial result."""
    problem = write_blobs(job_dir, files)
    if problem is not None:
        forget()
        log.warning("job_blobs_not_written", job=row["id"], error=problem)
        row.update(status=Status.FAILED.value, reason="storage", input=None, input_file=0,
                   result=None, result_file=0, result_size=0,
                   message=f"the outcome could not be recorded: {problem}")
    jobsql.insert(row, conn)
