"""The PostgreSQL twin of :mod:`pnsd.jobs.storedb`: the job database on a server that several
nodes share.

Owns the connection to PostgreSQL (psycopg 3), the PostgreSQL schema (versioned in
``pns_meta``, migrated under an advisory lock so that nodes starting together do it once) and
:class:`PgWriter`, the writer thread of :mod:`pnsd.jobs.storedb` on that connection. The
statements of :mod:`pnsd.jobs.jobsql` and :mod:`pnsd.audit` run unchanged: :class:`PgConn`
speaks the part of the DB-API that they use the way ``sqlite3`` does (``?`` and ``:name``
parameters, rows readable by position and by column name, ``sqlite3`` exception classes), so
the job store above does not know which database it has. It must not know about jobs beyond
the schema.

Group commit differs in one way: a server commit costs a flush to disk and a round trip, and
the callers of the ops just acknowledged send their next ones a moment later; so the
transaction that durable writes wait for commits once no op has come for ``LINGER`` (or the
batch is full), and one commit acknowledges all of them.
"""

from __future__ import annotations

import functools
import queue
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import psycopg
import structlog
from psycopg.pq import TransactionStatus

from pnsd.config import redacted_url as redacted
from pnsd.errors import StorageError
from pnsd.jobs.storedb import Op, Writer

log = structlog.get_logger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1
CONNECT_TIMEOUT = 5   # seconds to reach the server before an op fails with the reason
LINGER = 0.001   # seconds a commit that durable writes wait for waits for one more op
MIGRATION_LOCK = 0x706E73  # the advisory lock that serialises migrations between nodes
# The same tables as SQLite's (jobs with owner, idempotency key and node), the audit table,
# and the node leases. ``rowid`` plays SQLite's rowid: the insertion order that breaks ties.
_MIGRATIONS = (
    """
    CREATE TABLE jobs (
        rowid BIGINT GENERATED ALWAYS AS IDENTITY,
        id TEXT PRIMARY KEY, pts TEXT NOT NULL, status TEXT NOT NULL,
        created DOUBLE PRECISION NOT NULL, started DOUBLE PRECISION,
        finished DOUBLE PRECISION, updated DOUBLE PRECISION NOT NULL,
        progress INTEGER NOT NULL, message TEXT NOT NULL, reason TEXT NOT NULL,
        sync INTEGER NOT NULL, version TEXT NOT NULL,
        input BYTEA, input_file INTEGER NOT NULL, result BYTEA, result_file INTEGER NOT NULL,
        input_size BIGINT NOT NULL, result_size BIGINT NOT NULL,
        owner TEXT NOT NULL DEFAULT '', idem_key TEXT, node TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX jobs_pts_created ON jobs (pts, created);
    CREATE INDEX jobs_status ON jobs (status);
    CREATE INDEX jobs_owner_created ON jobs (owner, created);
    CREATE INDEX jobs_node_status ON jobs (node, status);
    CREATE UNIQUE INDEX jobs_owner_idem_key ON jobs (owner, idem_key)
        WHERE idem_key IS NOT NULL;
    CREATE TABLE audit (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at DOUBLE PRECISION NOT NULL,
        pts TEXT NOT NULL, action TEXT NOT NULL, who TEXT NOT NULL, old_version TEXT,
        new_version TEXT, outcome TEXT NOT NULL, error TEXT NOT NULL
    );
    CREATE INDEX audit_pts ON audit (pts, id);
    CREATE TABLE nodes (
        name TEXT PRIMARY KEY, epoch TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL,
        started DOUBLE PRECISION NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL
    )
    """,
)
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """``sql`` with sqlite3's ``?`` and ``:name`` parameters in psycopg's ``%s`` style."""
    sql = sql.replace("%", "%%").replace("?", "%s")
    return _NAMED.sub(r"%(\1)s", sql)


class Row(tuple[Any, ...]):
    """A result row readable by position and by column name, as ``sqlite3.Row`` is."""

    names: dict[str, int] = {}  # noqa: RUF012 - each row class built below sets its own

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(self.names[key])
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self.names)


@functools.lru_cache(maxsize=256)
def _row_class(columns: tuple[str, ...]) -> type[Row]:
    return type("Row", (Row,), {"names": {name: i for i, name in enumerate(columns)}})


def _rows(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    description = cursor.description
    if description is None:
        return Row
    row_class = _row_class(tuple(column.name for column in description))
    return row_class


class PgConn:
    """One psycopg connection in autocommit mode (the writer says BEGIN and COMMIT itself),
    reconnected on the next op after the server went away."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.reconnects = 0
        self.total_changes = 0   # rows written, as sqlite3's: a failed write that wrote first
        self._conn: psycopg.Connection[Any] | None = None

    def open(self) -> None:
        try:
            self._conn = psycopg.connect(self.url, autocommit=True, row_factory=_rows,
                                         connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            raise sqlite3.OperationalError(
                f"cannot reach PostgreSQL at {redacted(self.url)}: {exc}") from exc

    @property
    def in_transaction(self) -> bool:
        conn = self._conn
        if conn is None or conn.broken or conn.closed:
            return False
        return conn.info.transaction_status in (
            TransactionStatus.INTRANS, TransactionStatus.INERROR, TransactionStatus.ACTIVE)

    def execute(self, sql: str, params: Any = None) -> Any:
        """Run one statement. If it fails inside a transaction, the whole transaction is
        rolled back, as SQLite does on its hard errors: the writer then replays the ops
        applied before it (no savepoint round trips per op on the hot path)."""
        conn = self._live()
        try:
            if params is None:
                cursor = conn.execute(cast(Any, sql))
            else:
                cursor = conn.execute(cast(Any, pg_sql(sql)), params)
        except psycopg.Error as exc:
            self._abandon()
            raise _translated(exc) from exc
        self._count(cursor)
        return cursor

    def executemany(self, sql: str, rows: Iterable[Any]) -> Any:
        """Run one statement over many rows, in a savepoint: if it fails, only its rows are
        undone (the caller may then try them one by one, as on SQLite)."""
        conn = self._live()
        cursor = conn.cursor()
        inside = self.in_transaction
        try:
            if inside:
                conn.execute("SAVEPOINT many")
            cursor.executemany(cast(Any, pg_sql(sql)), rows)
            if inside:
                conn.execute("RELEASE many")
        except psycopg.Error as exc:
            if inside and conn.info.transaction_status is TransactionStatus.INERROR:
                conn.execute("ROLLBACK TO many")
                conn.execute("RELEASE many")
            raise _translated(exc) from exc
        self._count(cursor)
        return cursor

    def _count(self, cursor: Any) -> None:
        status = cursor.statusmessage or ""
        if cursor.rowcount > 0 and status.startswith(("INSERT", "UPDATE", "DELETE")):
            self.total_changes += cursor.rowcount

    def _abandon(self) -> None:
        conn = self._conn
        if conn is not None and not conn.broken and not conn.closed and (
                conn.info.transaction_status is TransactionStatus.INERROR):
            conn.execute("ROLLBACK")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def _live(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.broken and not conn.closed:
            return conn
        if conn is not None:
            conn.close()
        self.open()     # raises the reason while the server is away: the op fails with it
        self.reconnects += 1
        log.warning("store_reconnected", url=redacted(self.url), reconnects=self.reconnects)
        assert self._conn is not None
        return self._conn


def _translated(exc: psycopg.Error) -> sqlite3.Error:
    if isinstance(exc, psycopg.errors.IntegrityError):
        return sqlite3.IntegrityError(str(exc))
    return sqlite3.OperationalError(str(exc).strip())


class PgWriter(Writer):
    """The writer thread on a PostgreSQL connection (see :class:`pnsd.jobs.storedb.Writer`)."""

    def __init__(self, url: str, *, batch_size: int, batch_delay: float) -> None:
        super().__init__(Path(redacted(url)), batch_size=batch_size, batch_delay=batch_delay,
                         max_db_bytes=None)
        self.url = url
        self.conn = PgConn(url)

    @property
    def reconnects(self) -> int:
        return self.conn.reconnects

    def _connect(self) -> sqlite3.Connection:
        try:
            self.conn.open()
            self._migrate(self.conn)
        except sqlite3.Error as exc:
            self.conn.close()
            raise StorageError(f"cannot open the job database: {exc}") from exc
        # PgConn speaks the part of sqlite3.Connection that the statements use (see above)
        return cast(sqlite3.Connection, self.conn)

    @staticmethod
    def _migrate(conn: PgConn) -> None:
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS pns_meta "
                         "(key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            row = conn.execute("SELECT value FROM pns_meta WHERE key = 'schema'").fetchone()
            version = 0 if row is None else int(row[0])
            if version > SCHEMA_VERSION:
                raise StorageError(f"the job database has schema {version}; this pnsd "
                                   f"understands up to {SCHEMA_VERSION}")
            for step in range(version, SCHEMA_VERSION):
                conn.execute(_MIGRATIONS[step])
            conn.execute("INSERT INTO pns_meta VALUES ('schema', ?) ON CONFLICT (key) "
                         "DO UPDATE SET value = excluded.value", (SCHEMA_VERSION,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _begin(self, conn: sqlite3.Connection) -> None:
        if not conn.in_transaction:
            conn.execute("BEGIN")
            self._deadline = time.monotonic() + self._batch_delay

    def _next(self, conn: sqlite3.Connection) -> Op | None:
        # a commit that callers wait for waits for the ops right behind it (their callers,
        # just answered, send them a moment later): one commit, one flush on the server
        if not self._waiting or not conn.in_transaction:
            return super()._next(conn)
        try:    # durable writes wait for their commit: only while more ops keep coming
            return self._queue.get(timeout=LINGER)
        except queue.Empty:
            return None
