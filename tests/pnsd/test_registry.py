"""Generations: admission while draining, closing, and retiring with a cancel reason."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pnsd.errors import Busy, Unavailable
from pnsd.hosts.base import HostState
from pnsd.registry import Generation, Registry
from pnsd.spec import PtsSpec, parse_spec
from protocols.context import RunContext
from tests.waiting import until


class FakeHost:
    """A host whose runs wait for ``release`` (or forever); records stop."""

    queues_runs = False

    def __init__(self, spec: PtsSpec) -> None:
        self.spec = spec
        self.release = asyncio.Event()
        self.stopped = False

    async def start(self) -> None:
        return None

    async def run(self, data: Any, *, timeout: float, ctx: RunContext) -> Any:
        await self.release.wait()
        return self.spec.version

    async def hook(self, name: str, *, timeout: float) -> Any:
        return None

    async def stop(self, *, grace: float) -> None:
        self.stopped = True

    def state(self) -> HostState:
        return HostState("stopped" if self.stopped else "ready")


def _spec(version: str = "1", **table: Any) -> PtsSpec:
    return parse_spec("p", {"mode": "inproc", "entry": "m:f", "version": version, **table})


async def _hold(generation: Generation, events: list[str]) -> None:
    try:
        async with generation.slot():
            events.append("running")
            await generation.host.run(None, timeout=1, ctx=RunContext())
            events.append("done")
    except Unavailable as exc:
        events.append(exc.message)


async def test_closing_a_generation_fails_its_queued_runs_with_the_reason() -> None:
    registry = Registry(FakeHost)
    generation = await registry.start(_spec(concurrency=1))
    events: list[str] = []
    first = asyncio.create_task(_hold(generation, events))
    queued = asyncio.create_task(_hold(generation, events))
    await until(lambda: generation.admitted == 2)
    assert generation.running == 1 and generation.admitted == 2
    generation.close("PTS p was undeployed")
    await asyncio.wait_for(queued, 1)
    assert events == ["running", "PTS p was undeployed"]
    assert not first.done()          # the running one goes on
    generation.host.release.set()    # type: ignore[attr-defined]
    await asyncio.wait_for(first, 1)
    assert events[-1] == "done"


async def test_a_retired_generation_admits_nothing_and_stops_once_drained() -> None:
    registry = Registry(FakeHost)
    old = await registry.start(_spec("1"))
    registry.install(old)
    events: list[str] = []
    running = asyncio.create_task(_hold(old, events))
    await until(lambda: old.running == 1)
    new = await registry.start(_spec("2"))
    assert registry.switch(new, drain=5) is old
    assert registry.get("p") is new
    assert registry.retiring() == [old]
    await until(lambda: old.draining)      # retiring runs in a task of the registry's
    with pytest.raises(Unavailable, match="draining"):
        async with old.slot():
            pass
    assert not old.host.stopped           # type: ignore[attr-defined]
    old.host.release.set()                # type: ignore[attr-defined]
    await asyncio.wait_for(registry.settled(), 2)
    assert old.host.stopped and events[-1] == "done"   # type: ignore[attr-defined]
    assert registry.retiring() == []
    await running


async def test_runs_left_after_the_drain_time_are_cancelled_with_the_reason() -> None:
    registry = Registry(FakeHost)
    cancelled: list[tuple[int, str]] = []

    async def canceller(generation: Generation, reason: str) -> None:
        cancelled.append((generation.number, reason))
        generation.host.release.set()     # type: ignore[attr-defined]

    registry.set_canceller(canceller)
    old = await registry.start(_spec("1"))
    registry.install(old)
    events: list[str] = []
    running = asyncio.create_task(_hold(old, events))
    await until(lambda: old.running == 1)
    registry.switch(await registry.start(_spec("2")), drain=0.05)
    await asyncio.wait_for(registry.settled(), 2)
    assert cancelled == [(old.number, "replaced by version 2")]
    assert old.host.stopped               # type: ignore[attr-defined]
    await running


class LineHost(FakeHost):
    """A host with its own line of runs (like worker mode); counts the runs it was given."""

    queues_runs = True

    def __init__(self, spec: PtsSpec) -> None:
        super().__init__(spec)
        self.given = 0
        self.all_given = asyncio.Event()

    async def run(self, data: Any, *, timeout: float, ctx: RunContext) -> Any:
        self.given += 1
        if self.given == 3:
            self.all_given.set()
        return await super().run(data, timeout=timeout, ctx=ctx)


async def test_a_host_with_its_own_line_gets_every_admitted_run_at_once() -> None:
    registry = Registry(LineHost)
    generation = await registry.start(_spec(concurrency=1, queue=2))
    host = generation.host
    assert isinstance(host, LineHost)
    events: list[str] = []
    runs = [asyncio.create_task(_hold(generation, events)) for _ in range(3)]
    await asyncio.wait_for(host.all_given.wait(), 5)     # none held back in the registry
    assert generation.public()["running"] == 1 and generation.public()["queued"] == 2
    with pytest.raises(Busy):                             # the queue limit still holds
        async with generation.slot():
            pass
    host.release.set()
    await asyncio.wait_for(asyncio.gather(*runs), 5)
    assert events.count("done") == 3 and generation.admitted == 0


async def test_queued_runs_get_freed_slots_in_order_and_a_cancelled_one_takes_none() -> None:
    registry = Registry(FakeHost)
    generation = await registry.start(_spec(concurrency=1, queue=5))
    order: list[str] = []

    async def hold(name: str) -> None:
        async with generation.slot():
            order.append(name)
            await generation.host.run(None, timeout=1, ctx=RunContext())

    first = asyncio.create_task(hold("first"))
    await until(lambda: generation.running == 1)
    gone = asyncio.create_task(hold("gone"))
    second = asyncio.create_task(hold("second"))
    third = asyncio.create_task(hold("third"))
    await until(lambda: generation.admitted == 4)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert generation.admitted == 3 and generation.running == 1
    generation.host.release.set()    # type: ignore[attr-defined]
    await asyncio.wait_for(asyncio.gather(first, second, third), 1)
    assert order == ["first", "second", "third"]
    assert (generation.admitted, generation.running) == (0, 0)
    async with generation.slot():     # the slot came back: a new run takes it at once
        assert generation.running == 1


async def test_admission_stops_at_slots_plus_queue_and_waiters_share_one_drain() -> None:
    """The limit (slots + queue) is the generation's own; every wait_drained of one drain
    is answered when the last admitted run leaves, a timed-out one False."""
    registry = Registry(FakeHost)
    generation = await registry.start(_spec(concurrency=1, queue=2))
    assert await generation.wait_drained(0)          # nothing admitted: drained already
    events: list[str] = []
    runs = [asyncio.create_task(_hold(generation, events)) for _ in range(3)]
    await until(lambda: generation.admitted == 3)
    with pytest.raises(Busy):
        generation.slot()
    assert not await generation.wait_drained(0.01)   # runs left
    waiters = [asyncio.create_task(generation.wait_drained(5)) for _ in range(2)]
    generation.host.release.set()                    # type: ignore[attr-defined]
    assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [True, True]
    await asyncio.gather(*runs)
    assert events.count("done") == 3 and generation.admitted == 0
    generation.slot().withdraw()                     # admits again once drained
