"""Jobs as the daemon keeps its promises about them: acknowledged before a slot, refused at once
when the queue is full, owned, deduplicated by idempotency key, gone when deleted, and still
there (accepted) after a shutdown that left them queued."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pnsd.errors import Busy, Conflict, DaemonError, NotFound
from pnsd.handlers import Handlers
from pnsd.hosts.inproc import InprocHost
from pnsd.jobs.model import Job, Status, new_job_id, valid_job_id
from pnsd.jobs.scheduler import Scheduler
from pnsd.jobs.store import JobStore
from pnsd.registry import Registry
from pnsd.spec import parse_spec
from tests.waiting import until

SUBMIT_DEADLINE = 2.0    # seconds an acknowledgement may take: it must not wait for a slot


@dataclass
class Node:
    scheduler: Scheduler
    store: JobStore
    registry: Registry
    handlers: Handlers


async def open_node(tmp_path: Path, executor: ThreadPoolExecutor) -> Node:
    store = JobStore(tmp_path / "jobs.db", files_dir=tmp_path / "files", inline_limit=1024)
    await store.open()
    registry = Registry(lambda spec: InprocHost(spec, executor=executor))
    specs = [
        parse_spec("echo", {"mode": "inproc", "entry": "pnsd.demo:echo"}),
        parse_spec("sleep", {"mode": "inproc", "entry": "pnsd.demo:sleep", "concurrency": 1,
                             "queue": 2}),
    ]
    assert await registry.add_all(specs) == {}
    scheduler = Scheduler(registry, store)
    return Node(scheduler, store, registry, Handlers(registry, scheduler, home=tmp_path))


async def close_node(node: Node) -> None:
    await node.scheduler.shutdown(grace=1)
    await node.registry.stop_all(grace=1)
    await node.store.close()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    executor = ThreadPoolExecutor(4)
    opened = await open_node(tmp_path, executor)
    try:
        yield opened
    finally:
        await close_node(opened)
        executor.shutdown()


async def submit(node: Node, pts: str, data: Any, **fields: Any) -> dict[str, Any]:
    """A ``submit`` through the protocol handler, which must answer within the deadline."""
    body = {"pts": pts, "input": data, **fields}
    reply = await asyncio.wait_for(node.handlers.submit(body), SUBMIT_DEADLINE)
    job: dict[str, Any] = reply["job"]
    return job


async def ended(node: Node, job_id: str) -> Job:
    async def done() -> bool:
        return (await node.scheduler.status(job_id)).is_finished
    await until(done, timeout=20)
    return await node.scheduler.status(job_id)


async def running(node: Node, job_id: str) -> None:
    async def started() -> bool:
        return (await node.scheduler.status(job_id)).status is Status.RUNNING
    await until(started, timeout=20)


# -- acknowledgement and the queue bound ------------------------------------------------------

async def test_submissions_beyond_the_slots_are_recorded_accepted_and_answered_at_once(
        node: Node) -> None:
    first = await submit(node, "sleep", 30)
    await running(node, first["id"])
    queued = [await submit(node, "sleep", 0) for _ in range(2)]     # the slot is busy
    for job in queued:
        assert job["status"] == "accepted"
        assert (await node.store.get(job["id"])).status is Status.ACCEPTED   # durably
    with pytest.raises(Busy):                                       # the queue is full
        await submit(node, "sleep", 0)
    assert await node.store.count(pts="sleep") == 3                 # nothing stored for it
    await node.scheduler.cancel(first["id"])
    for job in queued:
        assert (await ended(node, job["id"])).status is Status.SUCCESSFUL


async def test_a_queued_job_that_is_cancelled_leaves_the_queue_at_once(node: Node) -> None:
    first = await submit(node, "sleep", 30)
    await running(node, first["id"])
    queued = [await submit(node, "sleep", 0) for _ in range(2)]
    await node.scheduler.cancel(queued[0]["id"])
    assert (await node.store.get(queued[0]["id"])).status is Status.DISMISSED
    replacement = await submit(node, "sleep", 0)     # its place in the queue is free again
    assert replacement["status"] == "accepted"
    await node.scheduler.cancel(first["id"])
    assert (await ended(node, replacement["id"])).status is Status.SUCCESSFUL


async def test_a_shutdown_leaves_queued_jobs_accepted_and_a_restart_runs_them(
        tmp_path: Path) -> None:
    executor = ThreadPoolExecutor(4)
    node = await open_node(tmp_path, executor)
    try:
        first = await submit(node, "sleep", 30)
        await running(node, first["id"])
        queued = await submit(node, "echo", 1)
        waiting = await submit(node, "sleep", {"seconds": 0})
    finally:
        await close_node(node)
    assert (await _stored(tmp_path, waiting["id"])).status is Status.ACCEPTED
    node = await open_node(tmp_path, executor)
    try:
        failed, requeued = await node.store.recover(node.scheduler.clock())
        assert failed == []          # the running one was recorded failed as the daemon stopped
        assert (await node.store.get(first["id"])).status is Status.FAILED
        assert [job.id for job in requeued] == [waiting["id"]]
        for job in requeued:
            await node.scheduler.resume(job)
        assert (await ended(node, waiting["id"])).status is Status.SUCCESSFUL
        assert (await node.scheduler.result(waiting["id"]))[1] == {"slept": 0}
        assert (await node.scheduler.status(queued["id"])).status is Status.SUCCESSFUL
    finally:
        await close_node(node)
        executor.shutdown()


async def _stored(tmp_path: Path, job_id: str) -> Job:
    store = JobStore(tmp_path / "jobs.db", files_dir=tmp_path / "files")
    await store.open()
    try:
        return await store.get(job_id)
    finally:
        await store.close()


# -- idempotency keys --------------------------------------------------------------------------

async def test_a_repeated_idempotency_key_returns_the_first_job_and_runs_once(
        node: Node) -> None:
    first = await submit(node, "echo", "a", owner="ann", idempotency_key="k1")
    again = await submit(node, "echo", "a", owner="ann", idempotency_key="k1")
    assert again["id"] == first["id"]
    await ended(node, first["id"])
    late = await submit(node, "echo", "a", owner="ann", idempotency_key="k1")
    assert (late["id"], late["status"]) == (first["id"], "successful")
    other = await submit(node, "echo", "a", owner="bob", idempotency_key="k1")  # per owner
    assert other["id"] != first["id"]
    assert await node.store.count(pts="echo") == 2
    with pytest.raises(Conflict):               # one key names one run of one PTS
        await submit(node, "sleep", 0, owner="ann", idempotency_key="k1")


async def test_concurrent_submissions_with_one_key_make_one_job(node: Node) -> None:
    replies = await asyncio.gather(*(
        submit(node, "echo", i, owner="ann", idempotency_key="burst") for i in range(10)))
    assert len({job["id"] for job in replies}) == 1
    assert await node.store.count(pts="echo") == 1
    assert node.registry.get("echo").admitted <= 1     # the repeats gave their admission back


async def test_a_repeated_key_is_answered_even_when_the_queue_is_full(node: Node) -> None:
    first = await submit(node, "sleep", 30, owner="ann", idempotency_key="long")
    await running(node, first["id"])
    for _ in range(2):
        await submit(node, "sleep", 30)
    again = await submit(node, "sleep", 30, owner="ann", idempotency_key="long")
    assert again["id"] == first["id"]
    with pytest.raises(Busy):
        await submit(node, "sleep", 30, owner="ann", idempotency_key="new")


async def test_a_deleted_job_frees_its_key(node: Node) -> None:
    first = await submit(node, "echo", 1, owner="ann", idempotency_key="k")
    await ended(node, first["id"])
    await node.handlers.job_delete({"job": first["id"], "owner": "ann"})
    second = await submit(node, "echo", 1, owner="ann", idempotency_key="k")
    assert second["id"] != first["id"]


@pytest.mark.parametrize("field", ["owner", "idempotency_key"])
@pytest.mark.parametrize("value", ["", 7, "x" * 300, ["a"]])
async def test_a_malformed_owner_or_key_is_a_bad_request(
        node: Node, field: str, value: Any) -> None:
    with pytest.raises(DaemonError) as caught:
        await submit(node, "echo", 1, **{field: value})
    assert caught.value.code == "bad_request"
    assert await node.store.count() == 0


# -- deletion ------------------------------------------------------------------------------------

async def test_a_deleted_finished_job_is_gone_from_memory_store_and_disk(
        node: Node, tmp_path: Path) -> None:
    payload = bytes(4096)                      # beyond the inline limit: stored as files
    job = await submit(node, "echo", payload)
    await ended(node, job["id"])
    assert (tmp_path / "files" / job["id"]).exists()
    reply = await node.handlers.job_delete({"job": job["id"]})
    assert reply["job"]["id"] == job["id"]
    for op in (node.handlers.job_status, node.handlers.job_result, node.handlers.job_delete):
        with pytest.raises(NotFound):
            await op({"job": job["id"]})
    with pytest.raises(NotFound):
        await node.store.get(job["id"])
    assert not (tmp_path / "files" / job["id"]).exists()


@pytest.mark.parametrize("queued", [False, True])
async def test_deleting_an_unfinished_job_cancels_it_then_deletes_it(
        node: Node, queued: bool) -> None:
    first = await submit(node, "sleep", 30)
    await running(node, first["id"])
    victim = await submit(node, "sleep", 30) if queued else first
    reply = await node.handlers.job_delete({"job": victim["id"]})
    assert reply["job"]["status"] == "dismissed"
    for op in (node.handlers.job_status, node.handlers.job_result):
        with pytest.raises(NotFound):
            await op({"job": victim["id"]})
    assert await node.store.count(pts="sleep") == (1 if queued else 0)


async def test_a_deleted_synchronous_run_is_gone(node: Node) -> None:
    job, _result = await node.scheduler.run("sleep", 0)
    await node.handlers.job_delete({"job": job.id})
    with pytest.raises(NotFound):
        await node.handlers.job_result({"job": job.id})


# -- ownership ---------------------------------------------------------------------------------

async def test_another_owners_job_is_not_found_and_the_operator_sees_all(node: Node) -> None:
    ann = await submit(node, "echo", "secret", owner="ann")
    bob = await submit(node, "echo", "other", owner="bob")
    await ended(node, ann["id"])
    assert ann["owner"] == "ann"
    for op in (node.handlers.job_status, node.handlers.job_result,
               node.handlers.job_result_chunk, node.handlers.job_cancel, node.handlers.job_delete):
        with pytest.raises(NotFound) as caught:
            await op({"job": ann["id"], "owner": "bob"})
        assert caught.value.message == f"no job {ann['id']}"    # the same as a missing one
    with pytest.raises(NotFound):
        async for _event in node.handlers.job_watch({"job": ann["id"], "owner": "bob"}):
            pass
    listed = await node.handlers.job_list({"owner": "bob"})
    assert [job["id"] for job in listed["jobs"]] == [bob["id"]] and listed["total"] == 1
    everything = await node.handlers.job_list({})
    assert {job["id"] for job in everything["jobs"]} == {ann["id"], bob["id"]}
    assert (await node.handlers.job_result({"job": ann["id"], "owner": "ann"}))["result"] \
        == "secret"
    assert (await node.handlers.job_result({"job": ann["id"]}))["result"] == "secret"
    chunk = await node.handlers.job_result_chunk({"job": ann["id"], "owner": "ann"})
    assert chunk["size"] == len(chunk["data"]) > 0


async def test_a_synchronous_run_belongs_to_its_owner(node: Node) -> None:
    reply = await node.handlers.run({"pts": "sleep", "input": 0, "owner": "ann"})
    ran = await reply if asyncio.iscoroutine(reply) else reply
    with pytest.raises(NotFound):
        await node.handlers.job_status({"job": ran["job"], "owner": "bob"})
    assert (await node.handlers.job_status({"job": ran["job"], "owner": "ann"}))["job"][
        "owner"] == "ann"


def test_job_ids_are_random_not_a_counter() -> None:
    ids = [new_job_id() for _ in range(2000)]
    assert all(valid_job_id(job_id) for job_id in ids)
    assert len(set(ids)) == len(ids)
    assert len({job_id[:8] for job_id in ids}) > 1900   # no shared prefix to guess from


# -- the schema ----------------------------------------------------------------------------------

async def test_a_schema_1_database_is_migrated_and_its_jobs_belong_to_the_operator(
        tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY, pts TEXT NOT NULL, status TEXT NOT NULL,
            created REAL NOT NULL, started REAL, finished REAL, updated REAL NOT NULL,
            progress INTEGER NOT NULL, message TEXT NOT NULL, reason TEXT NOT NULL,
            sync INTEGER NOT NULL, version TEXT NOT NULL,
            input BLOB, input_file INTEGER NOT NULL, result BLOB, result_file INTEGER NOT NULL,
            input_size INTEGER NOT NULL, result_size INTEGER NOT NULL
        );
        INSERT INTO jobs VALUES ('0123456789abcdef0123456789abcdef', 'echo', 'successful',
            1, 1, 2, 2, 100, '', '', 0, '1', NULL, 0, NULL, 0, 0, 0);
        PRAGMA user_version = 1;
    """)
    conn.close()
    store = JobStore(path, files_dir=tmp_path / "files")
    await store.open()
    try:
        [job] = await store.list()
        assert (job.owner, job.idempotency_key) == ("", None)
        assert await store.list(owner="ann") == []
    finally:
        await store.close()
