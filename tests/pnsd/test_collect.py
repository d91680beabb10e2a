"""Collecting results from the store: a job's record and result in one query, reads of one loop
turn in one op, and the scheduler's answers for jobs no longer in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from pnsd.errors import DaemonError, NotFound, NotReady, TooLarge
from pnsd.hosts.inproc import InprocHost
from pnsd.jobs.livejob import KEEP_RESULT_BYTES, LiveJob, LiveJobs, pack
from pnsd.jobs.model import Job
from pnsd.jobs.scheduler import Scheduler
from pnsd.jobs.store import JobStore
from pnsd.registry import Registry
from pnsd.spec import parse_spec
from protocols.context import RunContext

INLINE = 1024


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[JobStore]:
    jobs = JobStore(tmp_path / "jobs.db", files_dir=tmp_path / "files", inline_limit=INLINE)
    await jobs.open()
    yield jobs
    await jobs.close()


async def finished(store: JobStore, result: bytes | None, *, fail: bool = False,
                   owner: str = "") -> Job:
    job = Job.create("echo", 100.0, owner=owner)
    await store.add(job, b"in")
    job.start(101.0)
    if fail:
        job.fail(102.0, "pts_error", "it broke")
    else:
        job.succeed(102.0)
    await store.finish(job, result)
    return job


@pytest.mark.parametrize("size", [10, INLINE * 4])     # in the row, in a file
async def test_outcome_is_the_record_and_the_result(store: JobStore, size: int) -> None:
    job = await finished(store, b"r" * size)
    assert await store.outcome(job.id) == (job, b"r" * size)
    assert await store.outcome(job.id, size) == (job, b"r" * size)


async def test_outcome_leaves_out_a_result_over_the_bound_or_of_a_failed_job(
        store: JobStore) -> None:
    big = await finished(store, b"r" * 100)
    assert await store.outcome(big.id, 99) == (big, None)
    failed = await finished(store, None, fail=True)
    assert await store.outcome(failed.id) == (failed, None)
    with pytest.raises(NotFound):
        await store.outcome("0" * 32)


async def test_reads_of_one_loop_turn_reach_the_writer_as_one_op(store: JobStore) -> None:
    jobs = [await finished(store, b"r") for _ in range(5)]
    writer = store._writer
    assert writer is not None
    handed: list[int] = []
    submit_batch = writer.submit_batch

    def counting(items: Any, *, what: str) -> Any:
        handed.append(len(items))
        return submit_batch(items, what=what)

    writer.submit_batch = counting  # type: ignore[method-assign]
    read = await asyncio.gather(*(store.get(job.id) for job in jobs),
                                *(store.outcome(job.id) for job in jobs))
    assert read[:5] == jobs and [o[1] for o in read[5:]] == [b"r"] * 5
    assert handed == [10]


@pytest.fixture
async def scheduler(store: JobStore) -> AsyncIterator[Scheduler]:
    executor = ThreadPoolExecutor(2)
    registry = Registry(lambda spec: InprocHost(spec, executor=executor))
    spec = parse_spec("echo", {"mode": "inproc", "entry": "pnsd.demo:echo", "inline": True})
    assert await registry.add_all([spec]) == {}
    scheduler = Scheduler(registry, store)
    try:
        yield scheduler
    finally:
        await scheduler.shutdown(grace=1)
        await registry.stop_all(grace=1)
        executor.shutdown()


async def test_a_job_no_longer_in_memory_is_collected_from_the_store(
        scheduler: Scheduler, store: JobStore) -> None:
    job = await finished(store, bytes(pack({"x": 1})), owner="ann")
    assert scheduler.jobs.find(job.id) is None
    assert await scheduler.result(job.id) == (job, {"x": 1})
    assert await scheduler.result(job.id, owner="ann") == (job, {"x": 1})
    with pytest.raises(NotFound):
        await scheduler.result(job.id, owner="bob")
    with pytest.raises(TooLarge):
        await scheduler.result(job.id, max_bytes=1)


async def test_an_unfinished_or_failed_job_from_the_store_has_no_result(
        scheduler: Scheduler, store: JobStore) -> None:
    waiting = Job.create("echo", 100.0)
    await store.add(waiting, b"in")
    with pytest.raises(NotReady):
        await scheduler.result(waiting.id)
    failed = await finished(store, None, fail=True)
    with pytest.raises(DaemonError, match="it broke"):
        await scheduler.result(failed.id)


def _retired(jobs: LiveJobs, result_bytes: int, *, large: bool = False) -> LiveJob:
    live = LiveJob(Job.create("echo", 100.0), cast(Any, None), RunContext(), None,
                   result={"r": 1}, result_bytes=result_bytes)
    live.job.start(101.0)
    live.job.succeed(102.0)
    jobs.add(live)
    jobs.retire(live)
    return live


def test_finished_jobs_are_kept_by_count_and_by_bytes_of_results() -> None:
    jobs = LiveJobs(kept=3, kept_bytes=100)
    first = [_retired(jobs, 10) for _ in range(3)]
    assert jobs.kept == (3, 30)
    fourth = _retired(jobs, 10)           # over the count: the oldest goes
    assert jobs.find(first[0].job.id) is None and jobs.find(fourth.job.id) is fourth
    assert jobs.kept == (3, 30)
    big = _retired(jobs, 90)              # over the bytes: the oldest go until it fits
    assert jobs.kept == (2, 100)
    assert [jobs.find(live.job.id) for live in (first[2], fourth, big)] == [None, fourth, big]
    jobs.forget(big.job.id)
    assert jobs.kept == (1, 10)
    dropped = _retired(jobs, KEEP_RESULT_BYTES + 1)   # its result is read from the store
    assert dropped.result is None and not dropped.result_kept and jobs.kept == (2, 10)
    jobs.forget_all([fourth.job.id, dropped.job.id, "0" * 32])
    assert jobs.kept == (0, 0)


async def test_results_of_a_batch_come_from_memory_and_older_ones_from_the_store(
        scheduler: Scheduler, store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler.jobs = LiveJobs(kept=4)
    submitted = [await scheduler.submit("echo", {"x": i}) for i in range(10)]
    await asyncio.wait_for(asyncio.gather(*list(scheduler._tasks)), 10)
    reads: list[str] = []
    outcome = store.outcome

    async def counted(job_id: str, max_bytes: int | None = None) -> Any:
        reads.append(job_id)
        return await outcome(job_id, max_bytes)

    monkeypatch.setattr(store, "outcome", counted)
    results = [await scheduler.result(job.id) for job in submitted]
    assert [value for _job, value in results] == [{"x": i} for i in range(10)]
    assert all(job.status.value == "successful" for job, _value in results)
    assert reads == [job.id for job in submitted[:6]]    # the 4 latest: no database read
