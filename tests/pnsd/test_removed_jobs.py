"""Jobs the store removes by itself (retention at write time, ``jobs.cleanup``) are gone from
the daemon's memory too: no copy kept for late watchers answers for a job the store deleted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pnsd.errors import NotFound
from pnsd.handlers import Handlers
from pnsd.hosts.inproc import InprocHost
from pnsd.jobs.scheduler import Scheduler
from pnsd.jobs.store import JobStore
from pnsd.registry import Registry
from pnsd.spec import parse_spec
from tests.pnsd.test_job_admission import Node, close_node, ended, submit
from tests.waiting import until

PAYLOAD = "x" * 4000        # each job stores about twice this (input and result)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    executor = ThreadPoolExecutor(2)
    store = JobStore(tmp_path / "jobs.db", files_dir=tmp_path / "files", inline_limit=1024,
                     retention_bytes=40_000)
    await store.open()
    registry = Registry(lambda spec: InprocHost(spec, executor=executor))
    assert await registry.add_all(
        [parse_spec("echo", {"mode": "inproc", "entry": "pnsd.demo:echo"})]) == {}
    scheduler = Scheduler(registry, store)
    opened = Node(scheduler, store, registry, Handlers(registry, scheduler, home=tmp_path))
    try:
        yield opened
    finally:
        await close_node(opened)
        executor.shutdown()


async def test_a_job_retention_removed_is_not_found_in_memory_either(node: Node) -> None:
    first = await submit(node, "echo", PAYLOAD)
    await ended(node, first["id"])
    assert node.scheduler.jobs.find(first["id"]) is not None   # kept for late watchers

    async def trimmed() -> bool:
        await node.store.flush()
        try:
            await node.store.get(first["id"])
        except NotFound:
            return True
        job = await submit(node, "echo", PAYLOAD)      # more writes, until the bound trims
        await ended(node, job["id"])
        return False

    await until(trimmed, timeout=30)
    for op in (node.handlers.job_status, node.handlers.job_result):
        with pytest.raises(NotFound):
            await op({"job": first["id"]})


async def test_a_job_cleanup_removed_is_not_found_in_memory_either(node: Node) -> None:
    job = await submit(node, "echo", "small")
    await ended(node, job["id"])
    await node.store.flush()
    assert (await node.handlers.jobs_cleanup({"max_age": 0}))["deleted"] >= 1
    for op in (node.handlers.job_status, node.handlers.job_result):
        with pytest.raises(NotFound):
            await op({"job": job["id"]})
