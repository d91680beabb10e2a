"""The SQLite job database file: where it is made, its settings and its schema.

Owns the file's mode (0600, as its -wal and -shm), its settings (WAL, ``synchronous=NORMAL``,
the size cap) and its schema, versioned by ``user_version`` and migrated on open. It knows
nothing of the writer thread (:mod:`pnsd.jobs.storedb`) or of jobs beyond the schema.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from pnsd.errors import StorageError

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


def connect(path: Path, max_db_bytes: int | None) -> sqlite3.Connection:
    """The job database at ``path``, created or migrated to this version's schema."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _make_private(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT)
    try:
        _prepare(conn, path, max_db_bytes)
    except sqlite3.OperationalError as exc:
        conn.close()
        raise StorageError(f"cannot open job database {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StorageError(f"job database {path} is corrupt or not a database: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _make_private(path: Path) -> None:
    """Create the database file 0600 (SQLite gives its -wal and -shm the same mode) and
    tighten the three files if an earlier version left them readable by others."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        for suffix in ("", "-wal", "-shm"):
            file = Path(f"{path}{suffix}")
            if file.exists() and file.stat().st_mode & 0o077:
                file.chmod(0o600)
    except OSError as exc:
        raise StorageError(f"cannot open job database {path}: {exc.strerror}") from exc


def _prepare(conn: sqlite3.Connection, path: Path, max_db_bytes: int | None) -> None:
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"job database {path} has schema {version}; "
            f"this pnsd understands up to {SCHEMA_VERSION}"
        )
    for step in range(version, SCHEMA_VERSION):
        conn.executescript(
            f"BEGIN; {_MIGRATIONS[step]}; PRAGMA user_version = {step + 1}; COMMIT;"
        )
    if max_db_bytes is not None:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = max(1, max_db_bytes // page_size)
        conn.execute(f"PRAGMA max_page_count = {pages}")
