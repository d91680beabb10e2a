"""The SQL of the job store: the statements :class:`pnsd.jobs.store.JobStore` runs on its writer
thread, each a function of its arguments and the connection.

Owns the statements and the mapping between rows and :class:`pnsd.jobs.model.Job`; it must not
queue work, touch files or know about asyncio.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import operator
import sqlite3
from collections.abc import Iterable
from typing import Any

from pnsd.errors import Conflict, NotFound, NotOwner
from pnsd.jobs.model import FINISHED, Job, Status

JOB_COLUMNS = (
    "id, pts, status, created, started, finished, updated, progress, message, reason, sync, "
    "version, input_size, result_size, owner, idem_key, node"
)
MAX_SIZE = (1 << 63) - 1    # a bound no blob reaches
FINISHED_SQL = "status IN ({})".format(", ".join(f"'{s.value}'" for s in FINISHED))
STATE_SQL = (
    "status = :status, started = :started, finished = :finished, updated = :updated, "
    "progress = :progress, message = :message, reason = :reason, version = :version"
)
# The hot statements bind positionally: by name costs more per row (bench/FINDINGS.md,
# "Micro-measurements").
_STATE = ("status", "started", "finished", "updated", "progress", "message", "reason",
          "version")
_UPDATE_SQL = (f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in _STATE)} "
               "WHERE id = ? AND node = ?")
_update_params = operator.itemgetter(*_STATE, "id", "node")
_RESULT = ("result", "result_file", "result_size")
_FINISH_SQL = (f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in (*_STATE, *_RESULT))} "
               "WHERE id = ? AND node = ?")
_finish_params = operator.itemgetter(*_STATE, *_RESULT, "id", "node")


INSERT_CHUNK = 64   # rows per multi-row INSERT (64 x 19 columns: far below 32,766 variables)
DELETE_CHUNK = 500  # ids per DELETE ... WHERE id IN (...)


def insert_many(rows: list[dict[str, Any]], conn: sqlite3.Connection) -> None:
    """Insert ``rows`` (the same columns each) as few statements: one multi-row INSERT per
    INSERT_CHUNK rows. Each statement is one step, so the writer thread gives up and takes back
    the GIL once per chunk rather than once per row (``executemany`` does it per row): with the
    event loop busy, every take waits for the loop thread's switch interval (bench/FINDINGS.md,
    "Recording and the GIL")."""
    columns = tuple(rows[0])
    values = operator.itemgetter(*columns)
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start:start + INSERT_CHUNK]
        # executemany with one parameter set: one step, and on PostgreSQL a savepoint, so a
        # failing chunk undoes only itself, never the writes batched before it
        try:
            conn.executemany(_insert_sql(columns, len(chunk)),
                             [list(itertools.chain.from_iterable(map(values, chunk)))])
        except sqlite3.IntegrityError:   # a duplicate id among them: keep the others
            for row in chunk:
                with contextlib.suppress(sqlite3.IntegrityError):
                    conn.executemany(_insert_sql(columns), [values(row)])


@functools.lru_cache(maxsize=2 * INSERT_CHUNK)
def _insert_sql(columns: tuple[str, ...], count: int = 1) -> str:
    one = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO jobs ({', '.join(columns)}) VALUES {', '.join([one] * count)}"


def delete_all(job_ids: list[str], conn: sqlite3.Connection) -> None:
    """Delete the rows of ``job_ids``: one ``DELETE ... IN`` per DELETE_CHUNK ids, one step each,
    for the reason :func:`insert_many` gives (per row, a trim of thousands of small jobs held
    the writer for seconds while the loop was busy; bench/FINDINGS.md, "Recording and the
    GIL")."""
    for start in range(0, len(job_ids), DELETE_CHUNK):
        chunk = job_ids[start:start + DELETE_CHUNK]
        conn.execute(_delete_sql(len(chunk)), chunk)


@functools.lru_cache(maxsize=8)
def _delete_sql(count: int) -> str:
    return f"DELETE FROM jobs WHERE id IN ({', '.join('?' * count)})"


def insert(row: dict[str, Any], conn: sqlite3.Connection) -> None:
    try:
        conn.execute(_insert_sql(tuple(row)), tuple(row.values()))
    except sqlite3.IntegrityError:   # the primary key: one statement, no look-up first
        raise Conflict(f"job {row['id']} exists already", job=row["id"]) from None


def insert_keyed(row: dict[str, Any], conn: sqlite3.Connection) -> Job | None:
    """Insert a submission unless its owner has a job with its idempotency key: then that job.

    One op on the writer thread, so two submissions with one key cannot both insert.
    """
    if row["idem_key"] is not None:
        found = select_keyed(row["owner"], row["idem_key"], conn)
        if found is not None:
            return found
    insert(row, conn)
    return None


def select_keyed(owner: str, key: str, conn: sqlite3.Connection) -> Job | None:
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner = ? AND idem_key = ?",
                       (owner, key)).fetchone()
    return None if row is None else Job.from_row(row)


def update(row: dict[str, Any], conn: sqlite3.Connection) -> None:
    """Record a job's state; only its owner (``row["node"]``) may (see :func:`missing`)."""
    cursor = conn.execute(_UPDATE_SQL, _update_params(row))
    if cursor.rowcount == 0:
        missing(row, conn)


def update_all(rows: Iterable[dict[str, Any]], conn: sqlite3.Connection) -> None:
    """Record the state of jobs this node takes (recovery): each row's node becomes theirs."""
    conn.executemany(f"UPDATE jobs SET {STATE_SQL}, node = :node WHERE id = :id", rows)


def finish(row: dict[str, Any], conn: sqlite3.Connection) -> None:
    if conn.execute(_FINISH_SQL, _finish_params(row)).rowcount == 0:
        missing(row, conn)


def missing(row: dict[str, Any], conn: sqlite3.Connection) -> None:
    """Why a job's row was not written: there is none, or another node took the job over
    (its owner stopped renewing its lease), whose record wins."""
    found = conn.execute("SELECT node FROM jobs WHERE id = ?", (row["id"],)).fetchone()
    if found is None:
        raise NotFound(f"no job {row['id']}", job=row["id"])
    raise NotOwner(f"job {row['id']} belongs to node {found[0]!r} now, not {row['node']!r}",
                   job=row["id"], node=found[0])


def select_job(job_id: str, conn: sqlite3.Connection) -> Job:
    row = conn.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFound(f"no job {job_id}", job=job_id)
    return Job.from_row(row)


_WANTED = "status = 'successful' AND result_size <= ?"
_OUTCOME_SQL = (f"SELECT {JOB_COLUMNS}, CASE WHEN {_WANTED} THEN result END AS kept, "
                f"CASE WHEN {_WANTED} THEN result_file ELSE 0 END AS kept_file "
                "FROM jobs WHERE id = ?")


def select_outcome(job_id: str, max_bytes: int | None, conn: sqlite3.Connection
                   ) -> tuple[Job, bytes | None, bool]:
    """A job, its result if it succeeded with one of at most ``max_bytes`` (else None), and
    whether that result is in a file rather than the row."""
    limit = MAX_SIZE if max_bytes is None else max_bytes
    row = conn.execute(_OUTCOME_SQL, (limit, limit, job_id)).fetchone()
    if row is None:
        raise NotFound(f"no job {job_id}", job=job_id)
    return Job.from_row(row), row[-2], bool(row[-1])


def select_jobs(sql: str, params: list[Any], conn: sqlite3.Connection) -> list[Job]:
    return [Job.from_row(row) for row in conn.execute(sql, params)]


def scalar(sql: str, params: list[Any], conn: sqlite3.Connection) -> Any:
    return conn.execute(sql, params).fetchone()[0]


def select_blob(job_id: str, name: str, conn: sqlite3.Connection) -> tuple[bytes | None, bool]:
    sql = f"SELECT {name}, {name}_file FROM jobs WHERE id = ?"  # name is "input" or "result"
    row = conn.execute(sql, (job_id,)).fetchone()
    if row is None:
        raise NotFound(f"no job {job_id}", job=job_id)
    return row[0], bool(row[1])


def delete(job_id: str, conn: sqlite3.Connection) -> str | None:
    """Delete a finished job; else change nothing and return its status ("" if there is none).

    A refusal is a result, not an exception: it is no failed write (the store's error count).
    """
    row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        return ""
    if Status(row[0]) not in FINISHED:
        return str(row[0])
    conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
    return None


def cleanup(
    cutoff: float | None, max_bytes: int | None, conn: sqlite3.Connection
) -> list[tuple[str, bool]]:
    """Delete by age, then oldest first by size; returns (id, had files) of each deleted."""
    victims: list[tuple[str, bool]] = []
    if cutoff is not None:
        victims, _freed = select_oldest("finished < ?", [cutoff], conn)
        delete_all([job_id for job_id, _files in victims], conn)
    if max_bytes is not None:
        victims += trim(max_bytes, conn)[0]
    return victims


def where(pts: str | None, status: Status | None, owner: str | None = None,
          since: float | None = None, until: float | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause of a job listing; ``since``/``until`` bound ``created`` (inclusive)."""
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append("created >= ?")
        params.append(since)
    if until is not None:
        clauses.append("created <= ?")
        params.append(until)
    if owner is not None:
        clauses.append("owner = ?")
        params.append(owner)
    if pts is not None:
        clauses.append("pts = ?")
        params.append(pts)
    if status is not None:
        clauses.append("status = ?")
        params.append(Status(status).value)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), params


SIZE_SQL = "SELECT COALESCE(SUM(input_size + result_size), 0) FROM jobs"


def trim(target: int, conn: sqlite3.Connection) -> tuple[list[tuple[str, bool]], int]:
    """Delete the oldest finished jobs until inputs and results total at most ``target``.

    Returns (id, had files) of each deleted and the total left (above ``target`` when the
    unfinished jobs alone hold more).
    """
    total = int(scalar(SIZE_SQL, [], conn))
    if total <= target:
        return [], total
    # a job goes while what the jobs before it freed is still short of the excess
    victims, freed = select_oldest("upto - size < ?", [total - target], conn)
    delete_all([job_id for job_id, _files in victims], conn)
    return victims, total - freed


# The finished jobs, each with its bytes and those of every finished job before it (oldest first)
_OLDEST = ("SELECT id, input_file + result_file > 0 AS files, input_size + result_size AS size, "
           "finished, rowid AS seq, "
           "SUM(input_size + result_size) OVER (ORDER BY finished, rowid) AS upto "
           f"FROM jobs WHERE {FINISHED_SQL}")


def select_oldest(condition: str, params: list[Any], conn: sqlite3.Connection
                  ) -> tuple[list[tuple[str, bool]], int]:
    """(id, had files) of the finished jobs that meet ``condition`` (on ``finished``, ``size``
    and ``upto``), oldest first, and the bytes they hold.

    On SQLite in one step (a JSON aggregate): read row by row, each row is a step, and the
    writer gave the GIL up and waited to take it back per row; a trim of thousands of small
    jobs held it, and every write behind it, for seconds (bench/FINDINGS.md, "Recording and
    the GIL"). psycopg fetches the rows in one go.
    """
    rows = (f"SELECT id, files, size FROM ({_OLDEST}) AS oldest WHERE {condition} "
            "ORDER BY finished, seq")
    if isinstance(conn, sqlite3.Connection):
        listed, freed = conn.execute("SELECT json_group_array(json_array(id, files)), total(size) "
                                     f"FROM ({rows})", params).fetchone()
        return [(job_id, bool(files)) for job_id, files in json.loads(listed)], int(freed)
    found = conn.execute(rows, params).fetchall()
    return [(job_id, bool(files)) for job_id, files, _size in found], sum(r[2] for r in found)
