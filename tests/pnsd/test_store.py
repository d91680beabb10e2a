"""The SQLite job store: durability, group commit, blobs, recovery, retention, failures."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pnsd.errors import Conflict, NotFound, StorageError
from pnsd.jobs.model import Job, Status
from pnsd.jobs.store import JobStore

INLINE = 1024


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class OneBatchStore(JobStore):
    """Non-durable writes wait for a durable one or a flush, so a test can fill a batch."""

    BATCH_DELAY = 3600.0


def make_store(
    tmp_path: Path, *, inline_limit: int = INLINE, clock: FakeClock | None = None,
    max_db_bytes: int | None = None, store: type[JobStore] = JobStore,
) -> JobStore:
    return store(
        tmp_path / "jobs.db", files_dir=tmp_path / "files", inline_limit=inline_limit,
        clock=clock or FakeClock(), max_db_bytes=max_db_bytes,
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    jobs = make_store(tmp_path)
    await jobs.open()
    yield jobs
    await jobs.close()


async def finished_job(
    store: JobStore, pts: str = "echo", *, at: float = 100.0, result: bytes = b"r",
    blob: bytes = b"i",
) -> Job:
    job = Job.create(pts, at)
    await store.add(job, blob)
    job.start(at + 1)
    job.succeed(at + 2)
    await store.finish(job, result)
    return job


async def test_added_job_reads_back_with_its_input(store: JobStore) -> None:
    job = Job.create("echo", 100.0, version="3")
    await store.add(job, b"\x81\xa1a\x01")
    assert await store.get(job.id) == job
    assert await store.input(job.id) == b"\x81\xa1a\x01"
    assert await store.result(job.id) is None
    assert job.input_size == 4


async def test_unknown_job_is_not_found(store: JobStore) -> None:
    for read in (store.get, store.result, store.input, store.delete):
        with pytest.raises(NotFound):
            await read("0" * 32)


async def test_durable_add_is_committed_before_it_returns(tmp_path: Path) -> None:
    store = make_store(tmp_path, store=OneBatchStore)
    await store.open()
    other = make_store(tmp_path)  # a second connection sees only committed data
    await other.open()
    try:
        lazy = Job.create("echo", 99.0, sync=True)
        await store.add(lazy, b"", durable=False)
        with pytest.raises(NotFound):
            await other.get(lazy.id)
        job = Job.create("echo", 100.0)
        await store.add(job, b"in", durable=True)
        assert await other.get(job.id) == job
        assert await other.input(job.id) == b"in"
        assert await other.get(lazy.id) == lazy  # committed with the durable write after it
    finally:
        await other.close()
        await store.close()


async def test_non_durable_adds_share_commits_and_land_after_flush(
    tmp_path: Path, store: JobStore
) -> None:
    before = store.stats()["commits"]
    jobs = [Job.create("echo", float(i), sync=True) for i in range(2000)]
    await asyncio.gather(*(store.add(job, b"x", durable=False) for job in jobs))
    await store.flush()
    commits = store.stats()["commits"] - before
    assert 1 <= commits <= 200
    assert store.stats()["pending"] == 0
    other = make_store(tmp_path)
    await other.open()
    try:
        assert await other.count() == 2000
    finally:
        await other.close()


async def test_close_commits_pending_writes(tmp_path: Path) -> None:
    first = make_store(tmp_path)
    await first.open()
    job = Job.create("echo", 100.0, sync=True)
    await first.add(job, b"x", durable=False)
    job.start(101.0)
    await first.update(job)
    await first.close()
    second = make_store(tmp_path)
    await second.open()
    try:
        assert (await second.get(job.id)).status is Status.RUNNING
    finally:
        await second.close()


async def test_list_filters_pages_and_puts_newest_first(store: JobStore) -> None:
    created = []
    for i in range(5):
        for pts in ("a", "b"):
            job = Job.create(pts, 100.0 + i)
            await store.add(job, b"")
            created.append(job)
    running = created[0]
    running.start(200.0)
    await store.update(running, durable=True)

    a_jobs = await store.list(pts="a")
    assert [j.created for j in a_jobs] == [104.0, 103.0, 102.0, 101.0, 100.0]
    assert all(j.pts == "a" for j in a_jobs)
    page = await store.list(pts="a", limit=2, offset=1)
    assert [j.id for j in page] == [j.id for j in a_jobs[1:3]]
    assert [j.id for j in await store.list(status=Status.RUNNING)] == [running.id]
    assert await store.list(pts="b", status=Status.RUNNING) == []
    assert await store.count() == 10
    assert await store.count(pts="b") == 5
    assert await store.count(status=Status.ACCEPTED) == 9


async def test_finish_records_state_and_result(store: JobStore) -> None:
    job = await finished_job(store, result=b"\xc4\x03abc")
    stored = await store.get(job.id)
    assert stored.status is Status.SUCCESSFUL
    assert (stored.started, stored.finished, stored.progress) == (101.0, 102.0, 100)
    assert stored.result_size == 5
    assert await store.result(job.id) == b"\xc4\x03abc"


async def test_finish_refuses_an_unfinished_job(store: JobStore) -> None:
    job = Job.create("echo", 100.0)
    await store.add(job, b"")
    with pytest.raises(Conflict):
        await store.finish(job, b"r")


async def test_update_of_unknown_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(NotFound):
        await store.update(Job.create("echo", 1.0), durable=True)


async def test_failed_non_durable_write_is_counted_not_raised(store: JobStore) -> None:
    await store.update(Job.create("echo", 1.0), durable=False)
    await store.flush()
    assert store.stats()["write_errors"] == 1


async def test_adding_the_same_id_twice_is_a_conflict(store: JobStore) -> None:
    job = Job.create("echo", 100.0)
    await store.add(job, b"")
    with pytest.raises(Conflict):
        await store.add(job, b"")


async def test_big_blobs_go_to_files_and_round_trip(tmp_path: Path, store: JobStore) -> None:
    big_in, big_out = os.urandom(INLINE + 1), os.urandom(300_000)
    job = await finished_job(store, blob=big_in, result=big_out)
    job_dir = tmp_path / "files" / job.id
    assert (job_dir / "input.bin").read_bytes() == big_in
    assert (job_dir / "result.bin").read_bytes() == big_out
    assert await store.input(job.id) == big_in
    assert await store.result(job.id) == big_out
    assert sorted(p.name for p in job_dir.iterdir()) == ["input.bin", "result.bin"]
    small = await finished_job(store, blob=b"s" * INLINE)
    assert not (tmp_path / "files" / small.id).exists()
    assert await store.input(small.id) == b"s" * INLINE


async def test_delete_removes_record_and_files(tmp_path: Path, store: JobStore) -> None:
    job = await finished_job(store, blob=os.urandom(INLINE * 4))
    await store.delete(job.id)
    with pytest.raises(NotFound):
        await store.get(job.id)
    assert not (tmp_path / "files" / job.id).exists()


async def test_delete_refuses_an_unfinished_job(store: JobStore) -> None:
    job = Job.create("echo", 100.0)
    await store.add(job, b"")
    with pytest.raises(Conflict):
        await store.delete(job.id)
    assert await store.get(job.id) == job


async def test_a_refused_delete_is_not_a_write_error(store: JobStore) -> None:
    job = Job.create("echo", 100.0)
    await store.add(job, b"")
    with pytest.raises(Conflict):
        await store.delete(job.id)
    with pytest.raises(NotFound):
        await store.delete("0" * 32)
    assert store.stats()["write_errors"] == 0      # /metrics counts store failures from it


async def restarted(tmp_path: Path) -> tuple[JobStore, list[Job]]:
    """A store with one job in each of accepted, running and successful, closed and reopened."""
    first = make_store(tmp_path)
    await first.open()
    accepted, running = Job.create("a", 100.0), Job.create("b", 101.0)
    await first.add(accepted, b"")
    await first.add(running, b"")
    running.start(102.0)
    await first.update(running, durable=True)
    done = await finished_job(first, "a", at=90.0)
    await first.close()
    second = make_store(tmp_path)
    await second.open()
    return second, [accepted, running, done]


async def test_recover_fails_running_jobs_and_keeps_accepted_ones_to_run(
        tmp_path: Path) -> None:
    store, (accepted, running, done) = await restarted(tmp_path)
    try:
        failed, requeued = await store.recover(500.0)
        assert [j.id for j in failed] == [running.id]
        stored = await store.get(running.id)
        assert (stored.status, stored.reason) == (Status.FAILED, "daemon restarted")
        assert stored.finished == 500.0
        # an accepted job never started: nothing of it ran, so it runs after the restart
        assert [j.id for j in requeued] == [accepted.id]
        assert (await store.get(accepted.id)).status is Status.ACCEPTED
        assert await store.get(done.id) == done
        failed, requeued = await store.recover(600.0)
        assert (failed, [j.id for j in requeued]) == ([], [accepted.id])
    finally:
        await store.close()


async def test_recover_requeues_running_jobs_where_asked(tmp_path: Path) -> None:
    store, (accepted, running, _) = await restarted(tmp_path)
    try:
        failed, requeued = await store.recover(500.0, requeue=lambda pts: pts == "b")
        assert failed == []
        assert [j.id for j in requeued] == [accepted.id, running.id]
        stored = await store.get(running.id)
        assert (stored.status, stored.started, stored.updated) == (Status.ACCEPTED, None, 500.0)
    finally:
        await store.close()


async def test_cleanup_by_age_deletes_only_old_finished_jobs(tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    store = make_store(tmp_path, clock=clock)
    await store.open()
    try:
        old = await finished_job(store, at=100.0, result=os.urandom(INLINE * 2))
        new = await finished_job(store, at=900.0)
        unfinished = Job.create("echo", 50.0)
        await store.add(unfinished, b"")
        assert await store.cleanup(max_age=500.0, max_bytes=None) == 1
        assert {j.id for j in await store.list()} == {new.id, unfinished.id}
        assert not (tmp_path / "files" / old.id).exists()
    finally:
        await store.close()


async def test_cleanup_by_size_deletes_oldest_finished_first(store: JobStore) -> None:
    jobs = [await finished_job(store, at=100.0 * i, blob=b"", result=b"r" * 100) for i in range(5)]
    running = Job.create("echo", 1.0)
    await store.add(running, b"i" * 50)
    # 550 bytes stored; the unfinished job's 50 always stay.
    assert await store.cleanup(max_age=None, max_bytes=300) == 3
    assert {j.id for j in await store.list()} == {jobs[3].id, jobs[4].id, running.id}
    assert await store.cleanup(max_age=None, max_bytes=0) == 2
    assert [j.id for j in await store.list()] == [running.id]


async def test_corrupt_database_file_is_reported_by_name(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    path.write_bytes(b"this is not sqlite, " * 500)
    store = make_store(tmp_path)
    with pytest.raises(StorageError) as caught:
        await store.open()
    assert str(path) in caught.value.message
    assert "corrupt or not a database" in caught.value.message


async def test_database_from_a_newer_pnsd_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "jobs.db") as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StorageError, match="schema 99"):
        await make_store(tmp_path).open()


async def test_full_database_fails_the_write_and_keeps_earlier_jobs(tmp_path: Path) -> None:
    store = make_store(
        tmp_path, inline_limit=10_000_000, max_db_bytes=256 * 1024, store=OneBatchStore
    )
    await store.open()
    try:
        kept = Job.create("echo", 100.0)
        await store.add(kept, b"k" * 1000)
        queued = Job.create("echo", 101.0, sync=True)
        await store.add(queued, b"q", durable=False)  # same transaction as the failing write
        with pytest.raises(StorageError, match="full"):
            await store.add(Job.create("echo", 102.0), os.urandom(1024 * 1024))
        assert store.stats()["pending"] == 1  # SQLite dropped the batch; it was replayed
        await store.flush()
        assert store.stats()["lost"] == 0
        assert await store.get(kept.id) == kept
        assert await store.input(kept.id) == b"k" * 1000
        assert await store.get(queued.id) == queued
        after = Job.create("echo", 103.0)
        await store.add(after, b"a")  # a write that fits still works
        assert await store.count() == 3
        assert store.stats()["write_errors"] == 1
    finally:
        await store.close()


async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.open()
    await store.close()
    with pytest.raises(StorageError, match="not open"):
        await store.get("0" * 32)
    assert store.stats() == {"open": False}


def finished_sync_job(at: float = 100.0) -> Job:
    job = Job.create("echo", at, sync=True)
    job.start(at + 1)
    job.succeed(at + 2)
    return job


async def test_records_of_one_loop_turn_reach_the_writer_as_one_write(store: JobStore) -> None:
    jobs = [finished_sync_job() for _ in range(50)]
    for job in jobs:
        await store.record(job, b"in", b"out")   # no await point inside: one turn of the loop
    await store.flush()
    assert store.stats()["commits"] <= 2
    for job in jobs:
        assert (await store.get(job.id)).status.value == "successful"
        assert await store.result(job.id) == b"out" and await store.input(job.id) == b"in"


async def test_records_still_waiting_are_written_on_close(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    await store.open()
    job = finished_sync_job()
    await store.record(job, b"in", None)
    await store.close()
    reopened = make_store(tmp_path)
    await reopened.open()
    try:
        assert (await reopened.get(job.id)).sync is True
    finally:
        await reopened.close()


class SlowHandOverStore(JobStore):
    """Records wait for a hand-over for an hour unless something else sends them on."""

    RECORD_DELAY = 3600.0
    RECORD_BATCH = 10


async def test_a_read_or_write_after_records_finds_them_in_order(tmp_path: Path) -> None:
    store = make_store(tmp_path, store=SlowHandOverStore)
    await store.open()
    try:
        first, second = finished_sync_job(), finished_sync_job()
        assert store.record_inline(first, b"in", b"out")
        assert (await store.get(first.id)).status.value == "successful"   # the read sent it
        assert store.record_inline(second, b"in", None)
        await store.delete(second.id)     # a later write cannot overtake the record
        with pytest.raises(NotFound):
            await store.get(second.id)
    finally:
        await store.close()


async def test_records_are_handed_over_in_batches_without_waiting(tmp_path: Path) -> None:
    store = make_store(tmp_path, store=SlowHandOverStore)
    await store.open()
    try:
        jobs = [finished_sync_job() for _ in range(SlowHandOverStore.RECORD_BATCH)]
        for job in jobs:
            assert store.record_inline(job, b"in", b"out")
        assert store._records == []       # the full batch went without its hour's wait
        listed = await store.list(pts="echo", status=None, limit=100, offset=0)
        assert {job.id for job in listed} == {job.id for job in jobs}
    finally:
        await store.close()


async def test_record_inline_declines_blobs_that_need_a_file(store: JobStore) -> None:
    """False and nothing recorded: the run goes through record, which writes the file."""
    for input_blob, result_blob in ((bytes(INLINE + 1), None), (b"in", bytes(INLINE + 1))):
        job = finished_sync_job()
        assert not store.record_inline(job, input_blob, result_blob)
        with pytest.raises(NotFound):
            await store.get(job.id)
    job = finished_sync_job()
    assert store.record_inline(job, bytes(INLINE), bytes(INLINE))    # at the limit: inline
    assert (await store.get(job.id)).result_size == INLINE
