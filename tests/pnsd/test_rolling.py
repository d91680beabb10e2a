"""The rolling window of finished runs: buckets, outcomes, percentiles, forgetting, and the
scheduler feeding it as runs finish."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pnsd.errors import DaemonError
from pnsd.hosts.inproc import InprocHost
from pnsd.jobs.model import Job, Status
from pnsd.jobs.scheduler import Scheduler
from pnsd.jobs.store import JobStore
from pnsd.registry import Registry
from pnsd.rolling import RATIO, Rolling, bin_of, bound_of, percentile
from pnsd.spec import parse_spec


def finished(pts: str, created: float, finished: float, status: Status = Status.SUCCESSFUL) -> Job:
    return Job(id="0" * 32, pts=pts, status=status, created=created, updated=finished,
               finished=finished)


def test_runs_are_counted_in_their_step_by_outcome() -> None:
    rolling = Rolling(step=5, span=30)
    rolling.add(finished("a", 100.0, 101.0))
    rolling.add(finished("a", 100.0, 103.0, Status.FAILED))
    rolling.add(finished("a", 100.0, 107.0, Status.DISMISSED))
    rolling.add(finished("b", 100.0, 108.0))
    figures = rolling.figures(109.0)
    assert figures["step"] == 5 and figures["span"] == 30
    assert figures["times"] == [80, 85, 90, 95, 100, 105]
    a = figures["pts"]["a"]
    assert a["ok"] == [0, 0, 0, 0, 1, 0]
    assert a["failed"] == [0, 0, 0, 0, 1, 0]
    assert a["dismissed"] == [0, 0, 0, 0, 0, 1]
    assert a["total"]["ok"] == 1 and a["total"]["failed"] == 1
    assert figures["pts"]["b"]["ok"] == [0, 0, 0, 0, 0, 1]
    assert a["p50"][:4] == [None] * 4


def test_unfinished_jobs_are_not_counted() -> None:
    rolling = Rolling()
    rolling.add(Job(id="0" * 32, pts="a", status=Status.RUNNING, created=1.0, updated=2.0))
    assert rolling.figures(3.0)["pts"] == {}


def test_percentiles_are_within_one_bin_of_the_true_latency() -> None:
    rolling = Rolling(step=10, span=10)
    for i in range(1, 101):               # latencies 0.01 .. 1.00 s
        rolling.add(finished("a", 1000.0, 1000.0 + i / 100))
    total = rolling.figures(1005.0)["pts"]["a"]["total"]
    for p, true in ((50, 0.50), (90, 0.90), (99, 0.99)):
        assert true <= total[f"p{p}"] <= true * RATIO


def test_percentile_of_nothing_is_none_and_bins_are_monotonic() -> None:
    assert percentile({}, 0.5) is None
    assert bin_of(0.0) == 0 and bin_of(-1.0) == 0
    assert bin_of(1.0) < bin_of(2.0) <= bin_of(1e9)
    assert bound_of(bin_of(0.3)) >= 0.3


def test_old_buckets_and_gone_pts_are_forgotten() -> None:
    rolling = Rolling(step=5, span=20)
    rolling.add(finished("old", 0.0, 1.0))
    rolling.add(finished("new", 0.0, 50.0))
    figures = rolling.figures(52.0)
    assert set(figures["pts"]) == {"new"}
    assert rolling.figures(1000.0)["pts"] == {}


def test_a_finish_stamped_before_the_newest_bucket_counts_in_it() -> None:
    rolling = Rolling(step=5, span=30)
    rolling.add(finished("a", 0.0, 12.0))
    rolling.add(finished("a", 0.0, 3.0))        # the clock stepped back
    assert rolling.figures(14.0)["pts"]["a"]["ok"][-1] == 2


def test_a_shorter_span_is_the_window_tail() -> None:
    rolling = Rolling(step=5, span=600)
    rolling.add(finished("a", 0.0, 598.0))
    figures = rolling.figures(599.0, span=10)
    assert figures["times"] == [590, 595] and figures["pts"]["a"]["ok"] == [0, 1]


@pytest.fixture
async def scheduler(tmp_path: Path) -> AsyncIterator[Scheduler]:
    store = JobStore(tmp_path / "jobs.db", files_dir=tmp_path / "jobs")
    await store.open()
    executor = ThreadPoolExecutor(2)
    registry = Registry(lambda spec: InprocHost(spec, executor=executor))
    specs = [parse_spec("echo", {"mode": "inproc", "entry": "pnsd.demo:echo", "inline": True}),
             parse_spec("fail", {"mode": "inproc", "entry": "pnsd.demo:fail"})]
    assert await registry.add_all(specs) == {}
    scheduler = Scheduler(registry, store)
    try:
        yield scheduler
    finally:
        await scheduler.shutdown(grace=1)
        await registry.stop_all(grace=1)
        await store.close()
        executor.shutdown()


async def test_the_scheduler_feeds_every_finished_run_sync_and_async(
        scheduler: Scheduler) -> None:
    await scheduler.run("echo", {"x": 1})
    with pytest.raises(DaemonError):
        await scheduler.run("fail", {})
    job = await scheduler.submit("echo", {"x": 2})
    events = scheduler.events_of(job.id)
    assert events is not None
    async for _event in events.follow(0, idle=10):
        pass
    figures = scheduler.finisher.rolling.figures(scheduler.clock())["pts"]
    assert figures["echo"]["total"]["ok"] == 2
    assert figures["fail"]["total"]["failed"] == 1
    assert figures["echo"]["total"]["p50"] is not None
