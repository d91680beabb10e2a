"""The durable job store: job records, inputs and results in SQLite, big blobs as files (or
every blob in its row on a PostgreSQL server that several nodes share).

Owns the job operations and the per-job blob directory; every statement runs on the writer
thread that :func:`pnsd.jobs.storedb.open_writer` gives it (SQLite's, or the PostgreSQL twin
in :mod:`pnsd.jobs.pgdb`), and asyncio callers await futures. Recovery after a crash is
:mod:`pnsd.jobs.recovery`'s, the size bound :mod:`pnsd.jobs.trimming`'s, the records of
finished synchronous runs :mod:`pnsd.jobs.recording`'s. Writes are group-committed: a
durable write returns only after the transaction holding it committed, a non-durable one once
it is queued (its failure is only logged and counted); the open transaction commits once
nothing more is queued and a caller waits for it, or the batch is full, or a few milliseconds
have passed; the reads and durable writes of one loop turn reach the writer as one op
(:mod:`pnsd.jobs.turnbatch`). Blobs are opaque bytes (msgpack from the caller): the store
must not decode them, must not run jobs and must never block the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import structlog

from pnsd.config import redacted_url
from pnsd.errors import Conflict, NotFound, NotOwner, StorageError
from pnsd.jobs import jobsql, recovery
from pnsd.jobs.blobfiles import read_blob, read_range, remove, remove_all, write_blob
from pnsd.jobs.model import Job, Status
from pnsd.jobs.packed import Packed
from pnsd.jobs.recording import SyncRecords
from pnsd.jobs.storedb import Kind, Op, SqlFn, Writer, open_writer
from pnsd.jobs.trimming import Trimmed, Trimmer
from pnsd.jobs.turnbatch import TurnBatch

log = structlog.get_logger(__name__)

T = TypeVar("T")
JobList = list[Job]  # JobStore.list shadows the builtin inside the class
Ids = list[str]
MAX_INLINE = 1 << 62   # no blob is too big for its row

class JobStore(SyncRecords):
    """Job records in SQLite at ``db_path``; blobs over ``inline_limit`` under ``files_dir``
    (finished synchronous runs are recorded by :class:`SyncRecords`)."""

    BATCH_DELAY = 0.005  # seconds a transaction stays open for more writes, at most
    MAX_BACKLOG = 10_000  # queued ops past which non-durable writes wait (back-pressure)

    def __init__(
        self,
        db_path: Path,
        *,
        files_dir: Path,
        inline_limit: int = 64 * 1024,
        clock: Callable[[], float] = time.time,
        batch_size: int = 256,
        max_db_bytes: int | None = None,
        retention_bytes: int | None = None,
        url: str | None = None,
        node: str = "",
    ) -> None:
        self._path = db_path
        self._files = files_dir
        self._url = url      # postgresql://...: a job store that several nodes share
        self._where = str(db_path) if url is None else redacted_url(url)   # for logs
        self.node = node
        self.ownership_lost = 0   # outcomes refused because another node took the job over
        self.figures: dict[str, float] = {}   # more figures for stats() (the node lease's)
        # on a shared store every blob lives in its row, so that any node can serve it
        self._inline_limit = inline_limit if url is None else MAX_INLINE
        self._clock = clock
        self._batch_size = batch_size
        self._max_db_bytes = max_db_bytes  # a hard cap: past it, writes fail as disk full
        self._writer: Writer | None = None
        self._records: list[dict[str, Any]] = []   # finished sync runs, not handed over yet
        self._hand_over_timer: asyncio.TimerHandle | None = None
        self._batch = TurnBatch(lambda: self._writer)   # durable writes of this loop turn
        self._trimmer = Trimmer(retention_bytes, queue_trim=self._queue_trim,
                                remove_files=self._remove_files)
        self._unwritten: list[tuple[Future[Any], int]] = []   # record ops with blob files

    def set_forgetter(self, forget: Callable[[list[str]], None]) -> None:
        """Who is told the ids of jobs the store removed by itself (retention, cleanup), so
        that no copy outlives the record."""
        self._trimmer.forget = forget

    async def open(self) -> None:
        if self._writer is not None:
            raise StorageError(f"job store {self._path} is open already")
        writer = open_writer(self._path, self._url, batch_size=self._batch_size,
                             batch_delay=self.BATCH_DELAY, max_db_bytes=self._max_db_bytes)
        try:
            await asyncio.wrap_future(writer.start())
        except BaseException:
            writer.submit(Kind.STOP, None, durable=True, what="close")  # if it did open
            await asyncio.to_thread(writer.join)
            raise
        await asyncio.to_thread(self._files.mkdir, parents=True, exist_ok=True)
        self._writer = writer
        size = await self._read(partial(jobsql.scalar, jobsql.SIZE_SQL, []), "sum job sizes")
        self._trimmer.bound.stored = int(size)
        log.info("store_opened", path=self._where, node=self.node, jobs=await self.count())

    async def close(self) -> None:
        self._hand_over()
        self._batch.hand_over()
        await self._trimmer.close()
        writer, self._writer = self._writer, None
        if writer is None:
            return
        op = writer.submit(Kind.STOP, None, durable=True, what="close")
        assert op.future is not None
        await asyncio.wrap_future(op.future)
        await asyncio.to_thread(writer.join)
        log.info("store_closed", path=self._where, commits=writer.commits)

    async def flush(self) -> None:
        """Commit every write queued so far."""
        await self._submit(Kind.FLUSH, None, durable=True, what="flush")

    async def add(self, job: Job, input_blob: bytes | Packed, *,
                  durable: bool = True) -> Job | None:
        """Record a new job and its input; sets ``job.input_size``.

        If the job's owner has a job with its idempotency key already, nothing is recorded
        and that job is returned (None: ``job`` was recorded). Durable only when keyed.
        """
        job.input_size = len(input_blob)
        job.node = self.node
        row = job.to_row()
        row.update(await self._place(job.id, "input", input_blob), result=None, result_file=0)
        existing: Job | None = None
        try:
            if job.idempotency_key is None:
                await self._write(partial(jobsql.insert, row), durable, f"record job {job.id}")
            else:
                existing = await self._submit(
                    Kind.WRITE, partial(jobsql.insert_keyed, row), durable=True,
                    what=f"record job {job.id}")
        except StorageError:
            await asyncio.to_thread(remove, self._job_dir(job.id))
            raise
        if existing is not None:
            await asyncio.to_thread(remove, self._job_dir(job.id))
            return existing
        self._grew(job.input_size)
        return None

    def fits_inline(self, blob: bytes | Packed | None) -> bool:
        """True when ``blob`` is kept in its row rather than in a file."""
        return blob is None or len(blob) <= self._inline_limit

    def _queued_writer(self) -> Writer:
        """The writer, once the records and durable writes waiting for their hand-over are
        queued to it (so that every op runs in the order it was made)."""
        if self._records:
            self._hand_over()
        self._batch.hand_over()
        if self._writer is None:
            raise StorageError(f"job store {self._path} is not open")
        return self._writer

    async def update(self, job: Job, *, durable: bool = False) -> None:
        """Record status, progress, message and timestamps (if this node still owns the job)."""
        row = job.to_row()
        row["node"] = self.node
        await self._write(partial(jobsql.update, row), durable, f"update job {job.id}")

    async def finish(self, job: Job, result_blob: bytes | Packed | None, *,
                     durable: bool = True) -> None:
        """Record the final state and result; sets ``job.result_size``."""
        if not job.is_finished:
            raise Conflict(f"job {job.id} is {job.status.value}, not finished", job=job.id)
        job.result_size = 0 if result_blob is None else len(result_blob)
        row = job.to_row()
        row["node"] = self.node
        row.update(await self._place(job.id, "result", result_blob))
        try:
            await self._write(partial(jobsql.finish, row), durable, f"finish job {job.id}")
        except NotOwner as exc:   # its lease lapsed and another node took the job: theirs wins
            self.ownership_lost += 1
            log.warning("job_ownership_lost", job=job.id, node=self.node,
                        owner=exc.details.get("node"), status=job.status.value)
            return
        except StorageError:
            await asyncio.to_thread(remove, self._job_dir(job.id) / "result.bin")
            raise
        self._grew(job.result_size)

    async def get(self, job_id: str) -> Job:
        return await self._read(partial(jobsql.select_job, job_id), f"read job {job_id}")

    async def outcome(self, job_id: str, max_bytes: int | None = None
                      ) -> tuple[Job, bytes | None]:
        """A job's record and, if it succeeded with a result of at most ``max_bytes``, the
        result blob as stored (one query; None: no such result)."""
        query = partial(jobsql.select_outcome, job_id, max_bytes)
        job, blob, in_file = await self._read(query, f"read job {job_id}")
        if in_file:
            blob = await asyncio.to_thread(read_blob, self._job_dir(job_id) / "result.bin")
        return job, blob

    async def keyed(self, owner: str, key: str) -> Job | None:
        """The job ``owner`` submitted with idempotency key ``key``, if its record exists."""
        return await self._read(partial(jobsql.select_keyed, owner, key), "read keyed job")

    async def result(self, job_id: str) -> bytes | None:
        """The result blob exactly as stored, None if there is none (yet)."""
        return await self._blob(job_id, "result")

    async def result_chunk(self, job_id: str, offset: int, limit: int) -> tuple[int, bytes]:
        """The stored result's size and at most ``limit`` of its bytes from ``offset``, read
        from its file without loading the rest (a result too large for one message)."""
        query = partial(jobsql.select_blob, job_id, "result")
        blob, in_file = await self._read(query, "read result")
        if not in_file:
            blob = blob or b""
            return len(blob), blob[offset:offset + limit]
        path = self._job_dir(job_id) / "result.bin"
        return await asyncio.to_thread(read_range, path, offset, limit)

    async def input(self, job_id: str) -> bytes:
        blob = await self._blob(job_id, "input")
        return b"" if blob is None else blob

    async def list(
        self, *, pts: str | None = None, status: Status | None = None, limit: int = 100,
        offset: int = 0, owner: str | None = None, **window: float | None,
    ) -> JobList:
        """Jobs matching the filters (``owner``; ``window``: since/until), newest first."""
        where, params = jobsql.where(pts, status, owner, **window)
        sql = (
            f"SELECT {jobsql.JOB_COLUMNS} FROM jobs {where} "
            "ORDER BY created DESC, rowid DESC LIMIT ? OFFSET ?"
        )
        query = partial(jobsql.select_jobs, sql, [*params, limit, offset])
        return await self._read(query, "list jobs")

    async def count(self, *, pts: str | None = None, status: Status | None = None,
                    owner: str | None = None, **window: float | None) -> int:
        where, params = jobsql.where(pts, status, owner, **window)
        query = partial(jobsql.scalar, f"SELECT COUNT(*) FROM jobs {where}", params)
        return int(await self._read(query, "count jobs"))

    async def delete(self, job_id: str) -> None:
        """Remove a finished job's record and files (committed when this returns)."""
        refused = await self._submit(Kind.WRITE, partial(jobsql.delete, job_id), durable=True,
                                     what=f"delete job {job_id}")
        if refused == "":
            raise NotFound(f"no job {job_id}", job=job_id)
        if refused is not None:
            raise Conflict(f"job {job_id} is {refused}: cancel it before deleting",
                           job=job_id, status=refused)
        await asyncio.to_thread(remove, self._job_dir(job_id))

    async def recover(
        self, now: float, *, requeue: Callable[[str], bool] = lambda pts: False
    ) -> tuple[JobList, JobList]:
        """After a restart: accepted jobs (never started) stay accepted, to be run; running
        ones go back to accepted where ``requeue(pts)`` (an idempotent PTS), else fail. On a
        shared store only this node's jobs (see :mod:`pnsd.jobs.recovery`).

        Returns ``(failed, requeued)``, each oldest first.
        """
        return await recovery.recover(self, now, requeue=requeue)

    async def cleanup(self, *, max_age: float | None, max_bytes: int | None) -> int:
        """Delete finished jobs older than ``max_age`` seconds, then the oldest finished ones
        until inputs and results total at most ``max_bytes``. Returns how many went."""
        cutoff = None if max_age is None else self._clock() - max_age
        removed = await self._submit(
            Kind.WRITE, partial(jobsql.cleanup, cutoff, max_bytes), durable=True,
            what="clean up finished jobs",
        )
        await self._trimmer.removed(removed)
        log.info("store_cleaned", deleted=len(removed), max_age=max_age, max_bytes=max_bytes)
        return len(removed)

    async def run_sql(self, fn: SqlFn[T], *, write: bool, what: str) -> T:
        """Run ``fn(conn)`` on the writer thread: a durable write (committed when this returns)
        or a read. The hook for tables other modules own (:mod:`pnsd.audit`)."""
        return await self._submit(Kind.WRITE if write else Kind.READ, fn, durable=write,
                                  what=what)

    def stats(self) -> dict[str, Any]:
        """Cheap counters: ops queued, writes applied but not committed (pending), commits,
        failed writes, non-durable writes lost with a failed commit, and the bytes held
        against the bound (an estimate between trims)."""
        writer = self._writer
        if writer is None:
            return {"open": False}
        return {
            "open": True,
            "queued": writer.queued,
            "pending": writer.pending,
            "commits": writer.commits,
            "write_errors": writer.write_errors,
            "lost": writer.lost,
            "bytes": self._trimmer.bound.stored, "bound": self._trimmer.bound.limit,
            "node": self.node, "shared": self.shared, "ownership_lost": self.ownership_lost,
            "reconnects": writer.reconnects, **self.figures,
        }

    @property
    def shared(self) -> bool:
        """True for a database that several nodes share (PostgreSQL)."""
        return self._url is not None

    def _grew(self, size: int) -> None:
        self._trimmer.grew(size)

    def _queue_trim(self, target: int) -> Future[Trimmed]:
        op = self._queue(Kind.WRITE, partial(jobsql.trim, target), durable=True,
                         what="trim to the retention bound")
        assert op.future is not None
        return op.future

    async def _remove_files(self, job_ids: Ids) -> None:
        await asyncio.to_thread(remove_all, [self._job_dir(job_id) for job_id in job_ids])

    def _queue(self, kind: Kind, fn: SqlFn[Any] | None, *, durable: bool, what: str) -> Op:
        return self._queued_writer().submit(kind, fn, durable=durable, what=what)

    async def _submit(self, kind: Kind, fn: SqlFn[T] | None, *, durable: bool, what: str) -> T:
        op = self._queue(kind, fn, durable=durable, what=what)
        assert op.future is not None
        result: T = await asyncio.wrap_future(op.future)
        return result

    async def _read(self, fn: SqlFn[T], what: str) -> T:
        """With the other reads and durable writes of this loop turn: one op, one wake-up."""
        if self._records:       # records made before it go first
            self._hand_over()
        result: T = await self._batch.read(fn, what)
        return result

    async def _write(self, fn: SqlFn[Any], durable: bool, what: str) -> None:
        """Durable: return once committed. Otherwise return once queued (a failure is logged
        and counted, nobody waits for it), unless the writer is far behind: then wait."""
        if durable:       # with the others of this loop turn: one op, one commit
            await self._batch.write(fn, what)
            return
        writer = self._queued_writer()
        if writer.queued > self.MAX_BACKLOG:
            op = writer.submit(Kind.WRITE, fn, durable=durable, what=what)
            assert op.future is not None
            await asyncio.wrap_future(op.future)
        else:
            writer.submit_nowait(fn, what=what)

    def _job_dir(self, job_id: str) -> Path:
        return self._files / job_id

    async def _place(self, job_id: str, name: str, blob: bytes | Packed | None, *,
                     durable: bool = True) -> dict[str, Any]:
        """Columns for one blob: inline, or written to a file before its row commits."""
        if blob is None or len(blob) <= self._inline_limit:
            return {name: None if blob is None else bytes(blob), f"{name}_file": 0}
        await asyncio.to_thread(write_blob, self._job_dir(job_id) / f"{name}.bin", blob,
                                durable=durable)
        return {name: None, f"{name}_file": 1}

    async def _blob(self, job_id: str, name: str) -> bytes | None:
        query = partial(jobsql.select_blob, job_id, name)
        blob, in_file = await self._read(query, f"read {name}")
        if not in_file:
            return blob
        return await asyncio.to_thread(read_blob, self._job_dir(job_id) / f"{name}.bin")
