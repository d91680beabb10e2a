"""The job database's connection: one thread that owns it, runs every statement, group-commits.

Owns the writer thread (the file's settings and schema are :mod:`pnsd.jobs.sqlitefile`'s).
Callers hand it small functions of a connection; writes are group-committed: every write
queued while a transaction is open joins it, and it commits once nothing more is queued and
somebody waits for it, or the batch is full, or a few milliseconds have passed. A durable
write's future resolves only after the commit that made it durable. It knows nothing of jobs
beyond the schema; :mod:`pnsd.jobs.store` builds the job operations on top.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import structlog

from pnsd.errors import DaemonError, StorageError
from pnsd.jobs.sqlitefile import connect

log = structlog.get_logger(__name__)

T = TypeVar("T")
SqlFn = Callable[[sqlite3.Connection], T]


class Kind(Enum):
    READ = "read"
    WRITE = "write"
    BATCH = "batch"     # reads and durable writes of one loop turn (pnsd.jobs.turnbatch)
    FLUSH = "flush"
    STOP = "stop"


Item = tuple[SqlFn[Any], str, bool]       # a batch's fn, what it does, whether it writes
Outcomes = list[tuple[Any, Exception | None]]   # each item's value or error, in order


@dataclass
class Op:
    kind: Kind
    fn: SqlFn[Any] | None
    durable: bool
    what: str
    # None for a non-durable write: nobody waits for it, and a Future is not free.
    future: Future[Any] | None = field(default_factory=Future)
    items: list[Item] | None = None     # Kind.BATCH's


class Writer:
    """The thread that owns the connection and group-commits what callers queue.

    Every write queued while a transaction is open joins it; the transaction commits when
    nothing more is queued and somebody waits for the commit (a durable write, or a read that
    ran after one), when the batch is full, or when ``batch_delay`` has passed since it began.
    A durable write's future, and a read's that ran after uncommitted durable writes, resolve
    only after the commit: if the commit fails, they fail, and nothing is acknowledged.

    No savepoint per write: a write that fails fails alone because SQLite undoes a failed
    statement by itself and leaves the transaction open. A write that changed rows before it
    failed cannot be undone alone: then the transaction is rolled back and the writes before
    it replayed, as when SQLite rolls the whole transaction back by itself (a full disk).
    """

    def __init__(
        self, path: Path, *, batch_size: int, batch_delay: float, max_db_bytes: int | None
    ) -> None:
        self.path = path
        self.commits = 0
        self.write_errors = 0
        self.lost = 0  # non-durable writes applied, then lost with a failed transaction
        self.crashed: StorageError | None = None
        self._applied: list[tuple[SqlFn[Any], bool]] = []  # writes in the open transaction
        self._aborts = 0          # transactions given up: a batch op's earlier writes went too
        self._abort_error = StorageError("job store could not commit")
        self._batch_size = batch_size
        self._batch_delay = batch_delay
        self._max_db_bytes = max_db_bytes
        self._deadline = 0.0
        self._waiting: list[tuple[Future[Any], Any]] = []   # answered after the commit
        self._queue: queue.SimpleQueue[Op] = queue.SimpleQueue()
        self._opened: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="pnsd-store", daemon=True)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def pending(self) -> int:
        return len(self._applied)

    @property
    def reconnects(self) -> int:
        """Connections made again after the database went away (a server's; SQLite: 0)."""
        return 0

    def start(self) -> Future[None]:
        self._thread.start()
        return self._opened

    def submit(self, kind: Kind, fn: SqlFn[Any] | None, *, durable: bool, what: str) -> Op:
        if self.crashed is not None:
            raise self.crashed
        op = Op(kind, fn, durable, what)
        self._queue.put(op)
        return op

    def submit_batch(self, items: list[Item], *, what: str) -> Op:
        """Queue reads and durable writes as one op, run in order; its future resolves to
        their :data:`Outcomes` once its writes are committed (each fails alone)."""
        if self.crashed is not None:
            raise self.crashed
        op = Op(Kind.BATCH, None, True, what, items=items)
        self._queue.put(op)
        return op

    def submit_nowait(self, fn: SqlFn[Any], *, what: str) -> None:
        """Queue a non-durable write nobody waits for."""
        if self.crashed is not None:
            raise self.crashed
        self._queue.put(Op(Kind.WRITE, fn, False, what, None))

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # handed to the awaiting open(); nothing else runs
            self._opened.set_exception(exc)
            return
        self._opened.set_result(None)
        stop = None
        try:
            stop = self._serve(conn)
        except Exception as exc:  # the thread's boundary: a bug must not hang every caller
            log.exception("store_writer_crashed", path=str(self.path))
            self._crash(StorageError(f"job store writer crashed: {exc}"))
        finally:
            conn.close()
            if stop is not None:
                stop.set_result(None)

    def _serve(self, conn: sqlite3.Connection) -> Future[Any] | None:
        """Run ops until STOP; returns STOP's future unless its caller gave up."""
        while True:
            op = self._next(conn)
            if op is None:
                self._commit(conn)
            elif op.future is None:
                self._write(conn, op)
            elif op.kind is Kind.STOP:
                self._commit(conn)
                return op.future if op.future.set_running_or_notify_cancel() else None
            elif not op.future.set_running_or_notify_cancel():
                continue  # the caller gave up before we started
            elif op.kind is Kind.BATCH:
                self._batch(conn, op)
            elif op.kind is Kind.FLUSH:
                self._waiting.append((op.future, None))
                self._commit(conn)
            elif op.kind is Kind.WRITE:
                self._write(conn, op)
            else:
                self._read(conn, op)

    def _next(self, conn: sqlite3.Connection) -> Op | None:
        """The next op, or None when the open transaction is due to commit."""
        if not conn.in_transaction:
            return None if self._waiting else self._queue.get()
        timeout = self._deadline - time.monotonic()
        if timeout <= 0:
            return None
        try:    # with somebody waiting for the commit, only ops queued already join it
            return self._queue.get_nowait() if self._waiting else self._queue.get(
                timeout=timeout)
        except queue.Empty:
            return None

    def _read(self, conn: sqlite3.Connection, op: Op) -> None:
        assert op.fn is not None and op.future is not None
        value, error = self._query(conn, op.fn, op.what)
        if error is not None:
            op.future.set_exception(error)
        elif self._waiting:     # it may have seen uncommitted durable writes: after the commit
            self._waiting.append((op.future, value))
        else:
            op.future.set_result(value)

    def _write(self, conn: sqlite3.Connection, op: Op) -> None:
        assert op.fn is not None
        value, error = self._apply(conn, op.fn, op.what, op.durable)
        if op.future is not None:
            if error is not None:
                op.future.set_exception(error)
            elif op.durable:
                self._waiting.append((op.future, value))
            else:
                op.future.set_result(value)
        if len(self._applied) >= self._batch_size:
            self._commit(conn)

    def _batch(self, conn: sqlite3.Connection, op: Op) -> None:
        assert op.items is not None and op.future is not None
        aborts = self._aborts
        outcomes: Outcomes = []
        wrote = False       # a write to be committed before the op is answered
        for fn, what, write in op.items:
            if write:
                outcome = self._apply(conn, fn, what, True)
                wrote = wrote or outcome[1] is None
            else:
                outcome = self._query(conn, fn, what)
            outcomes.append(outcome)
            if self._aborts != aborts:   # its earlier writes went with the transaction
                op.future.set_exception(self._abort_error)
                return
        if wrote or self._waiting:
            self._waiting.append((op.future, outcomes))
        else:
            op.future.set_result(outcomes)
        if len(self._applied) >= self._batch_size:
            self._commit(conn)

    @staticmethod
    def _query(conn: sqlite3.Connection, fn: SqlFn[Any], what: str
               ) -> tuple[Any, Exception | None]:
        try:
            return fn(conn), None
        except Exception as exc:
            return None, translate(exc, what)

    def _apply(self, conn: sqlite3.Connection, fn: SqlFn[Any], what: str, durable: bool
               ) -> tuple[Any, Exception | None]:
        """Run one write in the open transaction: its value, or its error alone."""
        changes = conn.total_changes
        try:
            self._begin(conn)
            value = fn(conn)
        except Exception as exc:
            self.write_errors += 1
            if not durable or isinstance(exc, sqlite3.Error):  # else the caller reports it
                log.warning("store_write_failed", what=what, error=str(exc))
            if conn.in_transaction and conn.total_changes != changes:
                self._rollback(conn)     # it wrote before failing: undo it with the rest
            if not conn.in_transaction and self._applied:
                self._replay(conn)
            return None, translate(exc, what)
        self._applied.append((fn, durable))
        return value, None

    def _begin(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
            self._deadline = time.monotonic() + self._batch_delay

    def _replay(self, conn: sqlite3.Connection) -> None:
        """Re-apply the writes of a transaction that a failed write took down."""
        try:
            self._begin(conn)
            for fn, _durable in self._applied:
                fn(conn)
        except Exception as exc:
            self._abort(conn, exc)

    def _rollback(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("store_rollback_failed", path=str(self.path))

    def _commit(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._abort(conn, exc)
                return
            self.commits += 1
        waiting, self._waiting, self._applied = self._waiting, [], []
        for future, result in waiting:
            future.set_result(result)

    def _abort(self, conn: sqlite3.Connection, exc: Exception) -> None:
        """Roll back the whole batch: its callers learn it, nothing is acknowledged."""
        if conn.in_transaction:
            self._rollback(conn)
        unacknowledged = sum(1 for _fn, durable in self._applied if not durable)
        self.lost += unacknowledged
        log.error(
            "store_batch_lost", path=str(self.path), writes=len(self._applied),
            unacknowledged=unacknowledged, error=str(exc),
        )
        self._aborts += 1
        self._abort_error = StorageError(f"job store could not commit: {exc}")
        self._fail_waiting(self._abort_error)
        self._applied = []

    def _crash(self, error: StorageError) -> None:
        self.crashed = error
        self._fail_waiting(error)
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                return
            if op.future is not None and op.future.set_running_or_notify_cancel():
                op.future.set_exception(error)

    def _fail_waiting(self, error: StorageError) -> None:
        waiting, self._waiting = self._waiting, []
        for future, _ in waiting:
            future.set_exception(error)

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, self._max_db_bytes)


def open_writer(path: Path, url: str | None, *, batch_size: int, batch_delay: float,
                max_db_bytes: int | None) -> Writer:
    """The seam between the job store and its database: SQLite at ``path`` (embedded, the
    default), or the PostgreSQL server at ``url`` that several nodes share."""
    if url is None:
        return Writer(path, batch_size=batch_size, batch_delay=batch_delay,
                      max_db_bytes=max_db_bytes)
    # imported here: psycopg is loaded only by a node that has a server store
    from pnsd.jobs.pgdb import PgWriter  # noqa: PLC0415

    return PgWriter(url, batch_size=batch_size, batch_delay=batch_delay)


def translate(exc: Exception, what: str) -> Exception:
    if isinstance(exc, sqlite3.Error) and not isinstance(exc, DaemonError):
        error = StorageError(f"job store could not {what}: {exc}")
        error.__cause__ = exc
        return error
    return exc
