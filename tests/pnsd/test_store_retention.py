"""The store's size bound (``retention_bytes``) holds at write time, not at the next sweep."""

from __future__ import annotations

from pathlib import Path

from pnsd.jobs import jobsql
from pnsd.jobs.model import Job
from pnsd.jobs.retention import SizeBound
from pnsd.jobs.store import JobStore

SIZE_SQL = "SELECT COALESCE(SUM(input_size + result_size), 0) FROM jobs"
BOUND = 10_000
INLINE = 1024


def make_store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs.db", files_dir=tmp_path / "files", inline_limit=INLINE,
                    retention_bytes=BOUND)


async def stored(store: JobStore) -> int:
    await store.flush()
    return int(await store.run_sql(lambda conn: jobsql.scalar(SIZE_SQL, [], conn),
                                   write=False, what="sum"))


def finished(at: float) -> Job:
    job = Job.create("echo", at)
    job.start(at)
    job.succeed(at)
    return job


async def test_async_jobs_never_take_the_store_past_the_bound_by_more_than_one_job(
    tmp_path: Path,
) -> None:
    store = make_store(tmp_path)
    await store.open()
    try:
        for i in range(60):
            job = Job.create("echo", float(i))
            size = 2000 if i % 3 else 300            # every third input stays inline
            await store.add(job, b"i" * size)
            job.start(float(i))
            job.succeed(float(i))
            await store.finish(job, b"r" * 700)
            assert await stored(store) <= BOUND + size + 700, i
        assert len(await store.list(limit=1000)) < 60
    finally:
        await store.close()
    kept = {job.id for job in await reopened_jobs(tmp_path)}
    on_disk = {path.name for path in (tmp_path / "files").iterdir()}
    assert on_disk <= kept         # the files of every trimmed job are gone too


async def reopened_jobs(tmp_path: Path) -> list[Job]:
    store = make_store(tmp_path)
    await store.open()
    try:
        return await store.list(limit=1000)
    finally:
        await store.close()


async def test_a_burst_of_recorded_sync_runs_is_trimmed_as_it_arrives(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.open()
    try:
        for i in range(500):           # no await between them: as fast as the loop can go
            assert store.record_inline(finished(float(i)), b"i" * 100, b"r" * 400)
        assert await stored(store) <= BOUND + 500
        newest = await store.list(limit=1)
        assert newest and newest[0].created == 499.0
    finally:
        await store.close()


async def test_a_store_over_the_bound_at_start_is_trimmed_by_the_next_write(
    tmp_path: Path,
) -> None:
    unbounded = JobStore(tmp_path / "jobs.db", files_dir=tmp_path / "files", inline_limit=INLINE)
    await unbounded.open()
    for i in range(40):
        assert unbounded.record_inline(finished(float(i)), b"i" * 500, b"r" * 500)
    await unbounded.close()
    store = make_store(tmp_path)
    await store.open()
    try:
        assert store.record_inline(finished(100.0), b"i", b"r")
        assert await stored(store) <= BOUND
    finally:
        await store.close()


def test_unfinished_jobs_over_the_bound_do_not_make_every_write_trim() -> None:
    bound = SizeBound(1000)
    assert bound.grow(1200) == 900
    bound.trimmed(1200, 900, bound.grown)     # nothing finished to delete
    assert [bound.grow(10) for _ in range(9)] == [None] * 9
    assert bound.grow(100) == 900             # another tenth of the bound: try again
