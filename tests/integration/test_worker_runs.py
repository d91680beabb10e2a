"""Synchronous runs on worker hosts through the scheduler: answered, recorded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
import zmq

from pnsd.errors import Busy, Cancelled, DaemonError, PtsFailed
from pnsd.hosts.worker import WorkerHost
from pnsd.hosts.workerslot import WorkerTuning
from pnsd.jobs.model import Job, Status
from pnsd.jobs.scheduler import Outcome, Scheduler
from pnsd.jobs.store import JobStore
from pnsd.registry import Registry
from pnsd.spec import parse_spec
from tests.waiting import until

pytestmark = pytest.mark.slow

KEY = b"worker-runs-test-key"
TUNING = WorkerTuning(heartbeat=0.5, start_timeout=20.0, cancel_grace=0.5)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Scheduler, Registry, JobStore]]:
    context = zmq.Context()
    store = JobStore(tmp_path / "jobs.db", files_dir=tmp_path / "jobs")
    await store.open()
    registry = Registry(lambda spec: WorkerHost(spec, context=context, run_dir=tmp_path / "run",
                                                key=KEY, tuning=TUNING))
    specs = [parse_spec(name, {"mode": "worker", "entry": f"pnsd.demo:{entry}", **table})
             for name, entry, table in (("echo", "echo", {"workers": 2}),
                                        ("sleep", "sleep", {"workers": 1, "queue": 1}),
                                        ("fail", "fail", {"workers": 1}))]
    assert await registry.add_all(specs) == {}
    scheduler = Scheduler(registry, store)
    try:
        yield scheduler, registry, store
    finally:
        await scheduler.shutdown(grace=1)
        await registry.stop_all(grace=1)
        await store.close()
        context.destroy(linger=0)


class Answer:
    """A synchronous run in a task of its own, to be waited for."""

    def __init__(self, run: Coroutine[Any, Any, Outcome]) -> None:
        self.task = asyncio.ensure_future(run)

    async def outcome(self) -> Outcome:
        return await self.task


async def recorded(store: JobStore, job_id: str) -> Job:
    await store.flush()
    return await store.get(job_id)


async def test_runs_are_answered_and_recorded(node: Any) -> None:
    scheduler, _registry, store = node
    answers = [Answer(scheduler.run("echo", {"n": n})) for n in range(5)]
    for n, answer in enumerate(answers):
        job, result = await answer.outcome()
        assert result == {"n": n}
        assert (await recorded(store, job.id)).status is Status.SUCCESSFUL


async def test_a_failing_run_is_recorded_as_failed(node: Any) -> None:
    scheduler, _registry, store = node
    answer = Answer(scheduler.run("fail", "boom"))
    with pytest.raises(PtsFailed):
        await answer.outcome()
    jobs = await store.list(pts="fail")
    assert [job.status for job in jobs] == [Status.FAILED]


async def test_a_full_queue_refuses_at_once_and_a_cancel_dismisses_the_run(node: Any) -> None:
    scheduler, registry, store = node
    running = Answer(scheduler.run("sleep", 30))
    waiting = Answer(scheduler.run("sleep", 30))       # the one place in the queue
    await until(lambda: registry.get("sleep").admitted == 2)
    with pytest.raises(Busy):
        await scheduler.run("sleep", 30)
    assert registry.get("sleep").public()["waiting"] == 1
    await scheduler.cancel_runs_on(registry.get("sleep"), "replaced by a test")
    for answer in (running, waiting):
        with pytest.raises(Cancelled, match="replaced by a test"):
            await answer.outcome()
    jobs = await store.list(pts="sleep")
    assert sorted(job.status.value for job in jobs) == ["dismissed", "dismissed"]
    generation = registry.get("sleep")
    assert (generation.admitted, generation.running) == (0, 0)
    job, result = await Answer(scheduler.run("sleep", 0)).outcome()   # the slot is free
    assert job.status is Status.SUCCESSFUL and result["slept"] == 0


async def test_a_run_on_a_stopped_host_fails_and_is_recorded(node: Any) -> None:
    scheduler, registry, store = node
    await registry.get("echo").host.stop(grace=1)
    with pytest.raises(DaemonError, match="stopped"):
        await Answer(scheduler.run("echo", 1)).outcome()
    assert [job.status for job in await store.list(pts="echo")] == [Status.FAILED]
    assert registry.get("echo").admitted == 0
