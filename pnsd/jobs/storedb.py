"""The job database's connection: one thread that owns it, runs every statement, group-commits.

Owns the SQLite file's settings (WAL, ``synchronous=NORMAL``), its schema (versioned by
``user_version``) and the writer thread. Callers hand it small functions of a connection;
writes are batched into transactions: a durable write commits before its future resolves, the
open transaction also commits when the batch is full or a few milliseconds have passed. It knows
nothing of jobs beyond the schema; :mod:`pnsd.jobs.store` builds the job operations on top.
"""

from __future__ import annotations

import os
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

log = structlog.get_logger(__name__)

T = TypeVar("T")
SqlFn = Callable[[sqlite3.Connection], T]

SCHEMA_VERSION = 3
BUSY_TIMEOUT = 5.0  # seconds SQLite waits for a lock held by another process
# _MIGRATIONS[n] takes a database from user_version n to n + 1.
_MIGRATIONS = (
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY, pts TEXT NOT NULL, status TEXT NOT NULL,
        created REAL NOT NULL, started REAL, finished REAL, updated REAL NOT NULL,
        progress INTEGER NOT NULL, message TEXT NOT NULL, reason TEXT NOT NULL,
        sync INTEGER NOT NULL, version TEXT NOT NULL,
        input BLOB, input_file INTEGER NOT NULL, result BLOB, result_file INTEGER NOT NULL,
        input_size INTEGER NOT NULL, result_size INTEGER NOT NULL
    );
    CREATE INDEX jobs_pts_created ON jobs (pts, created);
    CREATE INDEX jobs_status ON jobs (status);
    """,
    # 2: jobs belong to the web user who made them ("" is the operator); an idempotency key
    # names one job of its owner for as long as that job's record exists.
    """
    ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN idem_key TEXT;
    CREATE INDEX jobs_owner_created ON jobs (owner, created);
    CREATE UNIQUE INDEX jobs_owner_idem_key ON jobs (owner, idem_key)
        WHERE idem_key IS NOT NULL;
    """,
    # 3: the node that runs a job (one node writes an embedded store; a shared one has many)
    "ALTER TABLE jobs ADD COLUMN node TEXT NOT NULL DEFAULT ''",
)


class Kind(Enum):
    READ = "read"
    WRITE = "write"
    FLUSH = "flush"
    STOP = "stop"


@dataclass
class Op:
    kind: Kind
    fn: SqlFn[Any] | None
    durable: bool
    what: str
    # None for a non-durable write: nobody waits for it, and a Future is not free.
    future: Future[Any] | None = field(default_factory=Future)


class Writer:
    """The thread that owns the connection and group-commits what callers queue."""

    def __init__(
        self, path: Path, *, batch_size: int, batch_delay: float, max_db_bytes: int | None
    ) -> None:
        self.path = path
        self.commits = 0
        self.write_errors = 0
        self.lost = 0  # non-durable writes applied, then lost with a failed transaction
        self.crashed: StorageError | None = None
        self._applied: list[Op] = []  # writes in the open transaction
        self._batch_size = batch_size
        self._batch_delay = batch_delay
        self._max_db_bytes = max_db_bytes
        self._deadline = 0.0
        self._waiting: list[tuple[Future[Any], Any]] = []
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

    def submit_nowait(self, fn: SqlFn[Any], *, what: str) -> None:
        """Queue a non-durable write nobody waits for (a single statement: see _write)."""
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
            return self._queue.get()
        timeout = self._deadline - time.monotonic()
        if timeout <= 0:
            return None
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _read(self, conn: sqlite3.Connection, op: Op) -> None:
        assert op.fn is not None and op.future is not None
        try:
            op.future.set_result(op.fn(conn))
        except Exception as exc:
            op.future.set_exception(translate(exc, op.what))

    def _write(self, conn: sqlite3.Connection, op: Op) -> None:
        assert op.fn is not None
        try:
            self._begin(conn)
            # A nowait write is one statement, which SQLite undoes by itself on failure.
            result = op.fn(conn) if op.future is None else self._isolated(conn, op.fn)
        except Exception as exc:
            self.write_errors += 1
            if not op.durable or isinstance(exc, sqlite3.Error):  # else the caller reports it
                log.warning("store_write_failed", what=op.what, error=str(exc))
            if op.future is not None:
                op.future.set_exception(translate(exc, op.what))
            if not conn.in_transaction and self._applied:
                self._replay(conn)
            return
        self._applied.append(op)
        if op.durable:
            assert op.future is not None
            self._waiting.append((op.future, result))
        elif op.future is not None:
            op.future.set_result(result)
        if self._due(op):
            self._commit(conn)

    def _due(self, op: Op) -> bool:
        """Whether the open transaction commits right after ``op``."""
        return op.durable or len(self._applied) >= self._batch_size

    @staticmethod
    def _isolated(conn: sqlite3.Connection, fn: SqlFn[T]) -> T:
        """Run ``fn`` in a savepoint, so its failure undoes only its own statements."""
        conn.execute("SAVEPOINT op")
        try:
            return fn(conn)
        except Exception:
            if conn.in_transaction:  # else SQLite rolled back the whole batch itself
                conn.execute("ROLLBACK TO op")
            raise
        finally:
            if conn.in_transaction:
                conn.execute("RELEASE op")

    def _begin(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            conn.execute("BEGIN IMMEDIATE")
            self._deadline = time.monotonic() + self._batch_delay

    def _replay(self, conn: sqlite3.Connection) -> None:
        """Re-apply the batch a failed write took down (SQLite rolls back on SQLITE_FULL)."""
        try:
            self._begin(conn)
            for op in self._applied:
                assert op.fn is not None
                op.fn(conn)
        except Exception as exc:
            self._abort(conn, exc)

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
        """Roll back the whole batch: durable callers learn it, nothing is acknowledged."""
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("store_rollback_failed", path=str(self.path))
        unacknowledged = sum(1 for op in self._applied if not op.durable)
        self.lost += unacknowledged
        log.error(
            "store_batch_lost", path=str(self.path), writes=len(self._applied),
            unacknowledged=unacknowledged, error=str(exc),
        )
        self._fail_waiting(StorageError(f"job store could not commit: {exc}"))
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
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._make_private()
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT)
        try:
            self._prepare(conn)
        except sqlite3.OperationalError as exc:
            conn.close()
            raise StorageError(f"cannot open job database {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StorageError(
                f"job database {self.path} is corrupt or not a database: {exc}"
            ) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _make_private(self) -> None:
        """Create the database file 0600 (SQLite gives its -wal and -shm the same mode) and
        tighten the three files if an earlier version left them readable by others."""
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
            for suffix in ("", "-wal", "-shm"):
                path = Path(f"{self.path}{suffix}")
                if path.exists() and path.stat().st_mode & 0o077:
                    path.chmod(0o600)
        except OSError as exc:
            raise StorageError(f"cannot open job database {self.path}: {exc.strerror}") from exc

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"job database {self.path} has schema {version}; "
                f"this pnsd understands up to {SCHEMA_VERSION}"
            )
        for step in range(version, SCHEMA_VERSION):
            conn.executescript(
                f"BEGIN; {_MIGRATIONS[step]}; PRAGMA user_version = {step + 1}; COMMIT;"
            )
        if self._max_db_bytes is not None:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = max(1, self._max_db_bytes // page_size)
            conn.execute(f"PRAGMA max_page_count = {pages}")


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
