"""The scheduler over a real store and in-process hosts: outcomes, cancels, storage failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pnsd.errors import Busy, DaemonError, StorageError
from pnsd.hosts.inproc import InprocHost
from pnsd.jobs.model import Job
from pnsd.jobs.scheduler import Scheduler
from pnsd.jobs.store import JobStore
from pnsd.registry import Registry
from pnsd.spec import PtsSpec, parse_spec
from tests.waiting import until


class RefusingStore(JobStore):
    """A store whose disk fills up when told to: durable finishes then fail."""

    full = False

    async def finish(self, job: Job, result_blob: bytes | None, *, durable: bool = True) -> None:
        if self.full and result_blob is not None:
            raise StorageError("disk full")
        await super().finish(job, result_blob, durable=durable)


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[Scheduler, RefusingStore]]:
    store = RefusingStore(tmp_path / "jobs.db", files_dir=tmp_path / "jobs")
    await store.open()
    executor = ThreadPoolExecutor(4)
    registry = Registry(lambda spec: InprocHost(spec, executor=executor))
    specs: list[PtsSpec] = [
        parse_spec("echo", {"mode": "inproc", "entry": "pnsd.demo:echo", "inline": True}),
        parse_spec("sleep", {"mode": "inproc", "entry": "pnsd.demo:sleep", "queue": 0}),
    ]
    assert await registry.add_all(specs) == {}
    scheduler = Scheduler(registry, store)
    try:
        yield scheduler, store
    finally:
        await scheduler.shutdown(grace=1)
        await registry.stop_all(grace=1)
        await store.close()
        executor.shutdown()


async def finished(scheduler: Scheduler, job_id: str) -> Job:
    events = scheduler.events_of(job_id)
    assert events is not None
    async for _event in events.follow(0, idle=10):
        pass
    return await scheduler.status(job_id)


async def test_a_result_the_store_refuses_fails_the_job_with_storage(parts: Any) -> None:
    scheduler, store = parts
    store.full = True
    job = await scheduler.submit("echo", {"x": 1})
    done = await finished(scheduler, job.id)
    assert done.status.value == "failed" and done.reason == "storage"
    with pytest.raises(DaemonError) as caught:
        await scheduler.result(job.id)
    assert caught.value.code == "storage"
    recorded = await store.get(job.id)       # the record agrees with what was reported
    assert recorded.status.value == "failed" and recorded.reason == "storage"


async def test_success_is_reported_only_with_its_result_stored(parts: Any) -> None:
    scheduler, store = parts
    job = await scheduler.submit("echo", [1, 2])
    done = await finished(scheduler, job.id)
    assert done.status.value == "successful"
    assert (await store.get(job.id)).status.value == "successful"
    assert (await scheduler.result(job.id))[1] == [1, 2]


async def test_a_full_slot_with_no_queue_is_busy_at_once(parts: Any) -> None:
    scheduler, _store = parts
    first = asyncio.create_task(scheduler.run("sleep", 5))
    await until(lambda: scheduler.registry.get("sleep").running == 1)
    with pytest.raises(Busy):
        await scheduler.run("sleep", 0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_cancel_of_a_running_job_dismisses_it(parts: Any) -> None:
    scheduler, _store = parts
    job = await scheduler.submit("sleep", 30)
    events = scheduler.events_of(job.id)
    assert events is not None
    async for event in events.follow(0, idle=10):
        if event.get("status") == "running":
            break
    await scheduler.cancel(job.id)
    done = await finished(scheduler, job.id)
    assert done.status.value == "dismissed"


async def test_large_results_of_finished_jobs_are_read_back_from_the_store(parts: Any) -> None:
    scheduler, _store = parts
    payload = bytes(range(256)) * 1024   # 256 KiB: more than a finished job keeps in memory
    job = await scheduler.submit("echo", payload)
    await finished(scheduler, job.id)
    assert scheduler.events_of(job.id) is not None          # still known for watchers
    assert (await scheduler.result(job.id))[1] == payload   # but read back from the store
    sync_job, result = await scheduler.run("echo", payload)
    assert result == payload
    await scheduler.store.flush()
    assert (await scheduler.result(sync_job.id))[1] == payload


async def test_an_inline_run_finishes_without_waiting_and_is_recorded(parts: Any) -> None:
    scheduler, store = parts
    run = scheduler.run("echo", {"x": 1})
    with pytest.raises(StopIteration) as done:   # one step: it never waits for the loop
        run.send(None)
    job, result = done.value.value
    assert result == {"x": 1} and job.status.value == "successful" and job.sync
    assert (await scheduler.status(job.id)).status.value == "successful"
    recorded = await store.get(job.id)           # a read hands the pending records over
    assert recorded.status.value == "successful" and recorded.input_size > 0
    assert (await scheduler.result(job.id))[1] == {"x": 1}


async def test_runs_that_wait_are_awaited(parts: Any) -> None:
    scheduler, _store = parts
    job, _result = await scheduler.run("sleep", 0)   # not inline: on the thread pool
    assert job.status.value == "successful"
    payload = bytes(200 * 1024)                  # an input too big for the row: to a file
    assert (await scheduler.run("echo", payload))[1] == payload


async def test_an_inline_result_too_big_for_the_row_is_recorded_before_the_answer(
    parts: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    scheduler, store = parts
    fits = iter([True, False])                     # the input fits its row, the result not
    monkeypatch.setattr(store, "record_inline", lambda job, input_blob, result_blob: False)
    monkeypatch.setattr(store, "fits_inline", lambda blob: next(fits))
    job, result = await scheduler.run("echo", b"payload")
    assert result == b"payload" and job.status.value == "successful"
    assert (await store.get(job.id)).result_size == len(b"payload") + 2


async def test_a_failing_inline_run_raises_and_is_recorded_as_failed(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.db", files_dir=tmp_path / "jobs")
    await store.open()
    registry = Registry(lambda spec: InprocHost(spec, executor=ThreadPoolExecutor(1)))
    spec = parse_spec("fail", {"mode": "inproc", "entry": "pnsd.demo:fail", "inline": True})
    assert await registry.add_all([spec]) == {}
    scheduler = Scheduler(registry, store)
    try:
        with pytest.raises(DaemonError) as caught:
            await scheduler.run("fail", None)
        assert caught.value.code == "pts_error"
        [job] = await store.list(pts="fail", status=None, limit=10, offset=0)
        assert job.status.value == "failed" and job.reason == "pts_error"
    finally:
        await registry.stop_all(grace=1)
        await store.close()


async def test_a_finished_run_keeps_an_event_log_only_if_it_was_watched(parts: Any) -> None:
    scheduler, _store = parts
    job, _result = await scheduler.run("echo", 1)
    assert scheduler.events_of(job.id) is None      # nobody watched: its status says it all
    assert (await scheduler.status(job.id)).status.value == "successful"
    watched = await scheduler.submit("sleep", 0.05)
    events = scheduler.events_of(watched.id)
    assert events is not None
    kinds = [event["status"] async for event in events.follow(0, idle=10)
             if event["kind"] == "status"]
    assert kinds[-1] == "successful"
    assert scheduler.events_of(watched.id) is events   # kept for late watchers
