"""Synchronous runs on worker hosts through the scheduler: answered by callback, recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from pnsd.errors import Busy, Cancelled, DaemonError, PtsFailed
from pnsd.jobs.finishing import Outcome
from pnsd.hosts.worker import WorkerHost
from pnsd.jobs.model import Job, Status
from pnsd.later import Later
from pnsd.registry import Registry
from pnsd.jobs.scheduler import Scheduler
from pnsd.spec import parse_spec
from pnsd.jobs.store import JobStore
from pnsd.hosts.children import WorkerTuning
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
    """Where a run's Later delivers, to be waited for."""

    def __init__(self, later: Any) -> None:
        assert isinstance(later, Later)
        self.value: Outcome | None = None
        self.error: Exception | None = None
        self.done = False
        later.then(self._got)

    def _got(self, value: Outcome | None, error: Exception | None) -> None:
        self.value, self.error, self.done = value, error, True

    async def outcome(self) -> Outcome:
        await until(lambda: self.done)
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


async def recorded(store: JobStore, job_id: str) -> Job:
    await store.flush()
    return await store.get(job_id)


async def test_runs_are_answered_and_recorded(node: Any) -> None:
    scheduler, _registry, store = node
    answers = [Answer(scheduler.run_now("echo", {"n": n})) for n in range(5)]
    for n, answer in enumerate(answers):
        job, result = await answer.outcome()
        assert result == {"n": n}
        assert (await recorded(store, job.id)).status is Status.SUCCESSFUL


async def test_a_failing_run_is_recorded_as_failed(node: Any) -> None:
    scheduler, _registry, store = node
    answer = Answer(scheduler.run_now("fail", "boom"))
    with pytest.raises(PtsFailed):
        await answer.outcome()
    jobs = await store.list(pts="fail")
    assert [job.status for job in jobs] == [Status.FAILED]


async def test_a_full_queue_refuses_at_once_and_a_cancel_dismisses_the_run(node: Any) -> None:
    scheduler, registry, store = node
    running = Answer(scheduler.run_now("sleep", 30))
    waiting = Answer(scheduler.run_now("sleep", 30))       # the one place in the queue
    with pytest.raises(Busy):
        scheduler.run_now("sleep", 30)
    assert registry.get("sleep").public()["waiting"] == 1
    await scheduler.cancel_runs_on(registry.get("sleep"), "replaced by a test")
    for answer in (running, waiting):
        with pytest.raises(Cancelled, match="replaced by a test"):
            await answer.outcome()
    jobs = await store.list(pts="sleep")
    assert sorted(job.status.value for job in jobs) == ["dismissed", "dismissed"]
    generation = registry.get("sleep")
    assert (generation.admitted, generation.running) == (0, 0)
    job, result = await Answer(scheduler.run_now("sleep", 0)).outcome()   # the slot is free
    assert job.status is Status.SUCCESSFUL and result["slept"] == 0


async def test_a_run_on_a_stopped_host_fails_and_is_recorded(node: Any) -> None:
    scheduler, registry, store = node
    await registry.get("echo").host.stop(grace=1)
    with pytest.raises(DaemonError, match="stopped"):
        await Answer(scheduler.run_now("echo", 1)).outcome()
    assert [job.status for job in await store.list(pts="echo")] == [Status.FAILED]
    assert registry.get("echo").admitted == 0
