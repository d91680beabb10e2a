"""The job SQL on a real SQLite file: the batched insert of recorded runs, the batched deletes."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

from pnsd.jobs import jobsql, sqlitefile
from pnsd.jobs.model import Job, Status


def recorded_row(index: int) -> dict[str, Any]:
    """A finished synchronous run's row, as recording builds it (the same columns each)."""
    job = Job(id=uuid.uuid4().hex, pts="echo", status=Status.SUCCESSFUL, created=float(index),
              started=float(index), finished=float(index), updated=float(index), progress=100,
              message="", reason="", sync=True, input_size=3, result_size=4, version="1")
    row = job.to_row()
    row.update(input=b"in%d" % index, input_file=0, result=b"out%d" % index, result_file=0)
    return row


def stored_ids(conn: Any) -> set[str]:
    return {r[0] for r in conn.execute("SELECT id FROM jobs")}


def test_insert_many_writes_every_row_in_one_statement_per_chunk(tmp_path: Path) -> None:
    conn = sqlitefile.connect(tmp_path / "jobs.db", None)
    rows = [recorded_row(i) for i in range(2 * jobsql.INSERT_CHUNK + 7)]
    inserts: list[str] = []
    conn.set_trace_callback(lambda sql: inserts.append(sql) if sql.startswith("INSERT") else None)
    conn.execute("BEGIN IMMEDIATE")
    jobsql.insert_many(rows, conn)
    conn.execute("COMMIT")
    # one step per chunk: the writer gives the GIL up per chunk, not per row
    assert len(inserts) == math.ceil(len(rows) / jobsql.INSERT_CHUNK)
    stored = {r[0]: r[1:] for r in conn.execute("SELECT id, created, input, result FROM jobs")}
    assert stored == {row["id"]: (row["created"], row["input"], row["result"]) for row in rows}


def test_insert_many_keeps_the_other_rows_of_a_chunk_with_a_duplicate_id(tmp_path: Path) -> None:
    conn = sqlitefile.connect(tmp_path / "jobs.db", None)
    rows = [recorded_row(i) for i in range(jobsql.INSERT_CHUNK + 10)]
    twin = dict(rows[jobsql.INSERT_CHUNK + 3], created=-1.0)   # in the second chunk
    jobsql.insert_many([twin], conn)
    jobsql.insert_many(rows, conn)
    stored = dict(conn.execute("SELECT id, created FROM jobs"))
    assert len(stored) == len(rows)
    assert stored[twin["id"]] == -1.0        # the first record of that id stands
    assert all(stored[row["id"]] == row["created"] for row in rows if row["id"] != twin["id"])


def test_trim_deletes_the_oldest_rows_in_one_statement_per_chunk(tmp_path: Path) -> None:
    conn = sqlitefile.connect(tmp_path / "jobs.db", None)
    rows = [recorded_row(i) for i in range(2 * jobsql.DELETE_CHUNK + 7)]
    jobsql.insert_many(rows, conn)
    keep = 5                                  # the newest five: 7 bytes each (3 in, 4 out)
    deletes: list[str] = []
    conn.set_trace_callback(lambda sql: deletes.append(sql) if sql.startswith("DELETE") else None)
    conn.execute("BEGIN IMMEDIATE")
    victims, left = jobsql.trim(keep * 7, conn)
    conn.execute("COMMIT")
    # one step per chunk: per row, a trim under load held the writer for seconds (FINDINGS)
    assert len(deletes) == math.ceil((len(rows) - keep) / jobsql.DELETE_CHUNK)
    assert [job_id for job_id, _files in victims] == [row["id"] for row in rows[:-keep]]
    assert left == keep * 7
    assert stored_ids(conn) == {row["id"] for row in rows[-keep:]}


def test_cleanup_by_age_and_size_deletes_in_chunks_and_reports_each_row(tmp_path: Path) -> None:
    conn = sqlitefile.connect(tmp_path / "jobs.db", None)
    rows = [recorded_row(i) for i in range(jobsql.DELETE_CHUNK + 20)]
    jobsql.insert_many(rows, conn)
    old = jobsql.DELETE_CHUNK + 3             # created and finished at 0 .. old - 1
    victims = jobsql.cleanup(float(old), 7 * 10, conn)   # then by size: the newest ten stay
    assert [job_id for job_id, _files in victims] == [row["id"] for row in rows[:-10]]
    assert stored_ids(conn) == {row["id"] for row in rows[-10:]}
