"""The job store on a real PostgreSQL server: the same behaviour as on SQLite, shared by
several nodes, node leases and the take-over of a dead node's jobs, a server that goes away
and comes back, and two nodes that both believe they own a job."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from harness.postgres import PgServer
from pnsd.audit import AuditEvent, AuditLog
from pnsd.errors import Conflict, NotFound, StorageError
from pnsd.jobs.leases import NodeLease
from pnsd.jobs.model import Job, Status
from pnsd.jobs.recovery import NODE_LOST, reap
from pnsd.jobs.store import JobStore
from protocols.errors import RemoteError
from tests.integration.conftest import running_daemon, settings_for
from tests.waiting import until

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def opened(tmp_path: Path, url: str, node: str, **kwargs: object
                 ) -> AsyncIterator[JobStore]:
    store = JobStore(tmp_path / node / "jobs.db", files_dir=tmp_path / node / "files",
                     url=url, node=node, inline_limit=16, **kwargs)  # type: ignore[arg-type]
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def finished(store: JobStore, pts: str = "echo", *, at: float = 100.0,
                   result: bytes = b"r" * 100) -> Job:
    job = Job.create(pts, at)
    await store.add(job, b"i" * 100)
    job.start(at + 1)
    job.succeed(at + 2)
    await store.finish(job, result)
    return job


async def test_records_inputs_results_and_lists_as_on_sqlite(tmp_path: Path, pg_url: str) -> None:
    async with opened(tmp_path, pg_url, "a") as store:
        done = await finished(store, at=100.0)
        other = Job.create("other", 200.0)
        await store.add(other, b"x" * 1000)
        assert await store.get(done.id) == done
        assert (await store.get(done.id)).node == "a"
        # blobs over inline_limit stay in their row on a shared store: any node reads them
        assert await store.result(done.id) == b"r" * 100
        assert await store.input(other.id) == b"x" * 1000
        assert not (tmp_path / "a" / "files" / done.id).exists()
        assert await store.result_chunk(done.id, 10, 5) == (100, b"rrrrr")
        assert [j.id for j in await store.list()] == [other.id, done.id]
        assert [j.id for j in await store.list(pts="echo")] == [done.id]
        assert await store.count(status=Status.ACCEPTED) == 1
        assert [j.id for j in await store.list(since=150.0)] == [other.id]
        with pytest.raises(Conflict):
            await store.add(other, b"")
        with pytest.raises(Conflict):
            await store.delete(other.id)
        await store.delete(done.id)
        with pytest.raises(NotFound):
            await store.get(done.id)


async def test_an_idempotency_key_names_one_job_of_its_owner(tmp_path: Path, pg_url: str) -> None:
    async with opened(tmp_path, pg_url, "a") as store:
        first = Job.create("echo", 1.0, owner="ann")
        first.idempotency_key = "k1"
        assert await store.add(first, b"1") is None
        second = Job.create("echo", 2.0, owner="ann")
        second.idempotency_key = "k1"
        repeated = await store.add(second, b"2")
        assert repeated is not None and repeated.id == first.id
        assert await store.keyed("ann", "k1") == repeated


async def test_sync_records_and_retention_work_on_the_server(tmp_path: Path, pg_url: str) -> None:
    async with opened(tmp_path, pg_url, "a", retention_bytes=1000) as store:
        for at in range(20):
            job = Job.create("echo", float(at), sync=True)
            job.start(at + 0.1)
            job.succeed(at + 0.2)
            assert store.record_inline(job, b"i" * 8, b"r" * 8)
        await store.flush()
        assert await store.count() == 20
        kept = [await finished(store, at=float(at))   # 200 bytes each: past the bound of 1000
                for at in range(100, 110)]
        await until(lambda: not store._trimmer.tasks)
        assert store.stats()["bytes"] <= 1000 + 200
        # oldest first: the runs went, the newest jobs stayed
        assert await store.count() == 5      # 1,000 bytes: at the bound, not over it
        assert [job.id for job in await store.list()] == [job.id for job in kept[-5:][::-1]]
        assert await store.cleanup(max_age=60.0, max_bytes=None) == 5   # finished long ago
        assert await store.count() == 0


async def test_a_restarted_node_recovers_only_its_own_jobs(tmp_path: Path, pg_url: str) -> None:
    async with opened(tmp_path, pg_url, "a") as a, opened(tmp_path, pg_url, "b") as b:
        mine, theirs = Job.create("echo", 1.0), Job.create("echo", 2.0)
        await a.add(mine, b"")
        await b.add(theirs, b"")
        for store, job in ((a, mine), (b, theirs)):
            job.start(3.0)
            await store.update(job, durable=True)
        failed, requeued = await a.recover(10.0)
        assert ([j.id for j in failed], requeued) == ([mine.id], [])
        assert (await a.get(theirs.id)).status is Status.RUNNING   # b's: untouched


async def test_audit_events_are_kept_on_the_server(tmp_path: Path, pg_url: str) -> None:
    async with opened(tmp_path, pg_url, "a") as store:
        audit = AuditLog(store, clock=lambda: 5.0)
        await audit.open()
        await audit.record(AuditEvent(pts="echo", action="deploy", who="ann", new_version="1"))
        [event] = await audit.history("echo")
        assert (event.who, event.new_version, event.at) == ("ann", "1", 5.0)


async def expire(store: JobStore, node: str) -> None:
    """``node``'s lease runs out now (as it does when the node stops renewing it)."""
    await store.run_sql(lambda conn: conn.execute(
        "UPDATE nodes SET expires = 0 WHERE name = ?", (node,)), write=True, what="expire")


def reaper(store: JobStore, served: set[str], idempotent: set[str]
           ) -> Callable[[], object]:
    async def run() -> tuple[list[Job], list[Job]]:
        return await store.run_sql(
            lambda conn: reap(store.node, 50.0, served, idempotent, conn), write=True,
            what="reap")
    return run


async def test_a_dead_nodes_jobs_are_failed_or_taken_over(tmp_path: Path, pg_url: str) -> None:
    async with opened(tmp_path, pg_url, "a") as a, opened(tmp_path, pg_url, "b") as b:
        await NodeLease(a, ttl=30.0).claim()
        await NodeLease(b, ttl=30.0).claim()
        running, again, waiting, elsewhere = (Job.create(pts, 1.0) for pts in
                                              ("plain", "idem", "plain", "unserved"))
        for job in (running, again, waiting, elsewhere):
            await a.add(job, b"in")
        for job in (running, again):
            job.start(2.0)
            await a.update(job, durable=True)
        assert await reaper(b, {"plain", "idem"}, {"idem"})() == ([], [])  # a is alive
        await expire(a, "a")
        failed, requeued = await reaper(b, {"plain", "idem"}, {"idem"})()  # type: ignore[misc]
        assert [j.id for j in failed] == [running.id]
        assert {j.id for j in requeued} == {again.id, waiting.id}
        stored = await b.get(running.id)
        assert (stored.status, stored.reason, stored.node) == (Status.FAILED, NODE_LOST, "b")
        assert "node a stopped renewing its lease" in stored.message
        assert (await b.get(again.id)).status is Status.ACCEPTED
        # no node serving its PTS took it: it waits, and so does a's lease row
        assert (await b.get(elsewhere.id)).node == "a"
        rows = await b.run_sql(lambda c: c.execute("SELECT name FROM nodes").fetchall(),
                               write=False, what="nodes")
        assert sorted(r[0] for r in rows) == ["a", "b"]


async def test_two_nodes_that_both_believe_they_own_a_job(tmp_path: Path, pg_url: str) -> None:
    """a stalls past its lease; b fails its running job; a wakes up and finishes the run: a's
    outcome is refused with a log line and a count, and b's record stands."""
    async with opened(tmp_path, pg_url, "a") as a, opened(tmp_path, pg_url, "b") as b:
        lease = NodeLease(a, ttl=30.0)
        await lease.claim()
        job = Job.create("plain", 1.0)
        await a.add(job, b"in")
        job.start(2.0)
        await a.update(job, durable=True)
        await expire(a, "a")
        await reaper(b, {"plain"}, set())()
        job.succeed(3.0)
        with capture_logs() as logs:
            await a.finish(job, b"late result")    # refused, not raised
            await lease.renew()
        assert a.stats()["ownership_lost"] == 1
        assert a.stats()["lease_lost"] == 1
        events = [entry["event"] for entry in logs]
        assert "job_ownership_lost" in events and "node_lease_lost" in events
        stored = await b.get(job.id)
        assert (stored.status, stored.node) == (Status.FAILED, "b")
        assert await b.result(job.id) is None
        # an accepted job a had queued: its start is refused too, so it never runs twice
        queued = Job.create("plain", 4.0)
        await a.add(queued, b"")
        await expire(a, "a")
        await reaper(b, {"plain"}, set())()
        queued.start(5.0)
        with pytest.raises(Conflict, match="belongs to node 'b'"):
            await a.update(queued, durable=True)


async def test_a_server_that_goes_away_and_comes_back(tmp_path: Path) -> None:
    with PgServer(durable=True) as server:
        async with opened(tmp_path, server.url, "a") as store:
            kept = await finished(store)
            server.kill()
            with capture_logs() as logs:
                # the insert fails, or, if the server's backend outlives it for a moment,
                # the commit after it: either way the write fails and nothing is acknowledged
                with pytest.raises(StorageError, match=r"job store could not (record|commit)"):
                    await store.add(Job.create("echo", 5.0), b"")
                server.start()
                back = Job.create("echo", 6.0)
                await store.add(back, b"")
            assert await store.get(kept.id) == kept     # committed before the crash
            assert (await store.get(back.id)).status is Status.ACCEPTED
            assert store.stats()["reconnects"] >= 1
            assert any(e["event"] == "store_reconnected" for e in logs)


async def progress_queued(store: JobStore) -> Job:
    """A job whose progress (40) is an update queued in the open batch, not committed yet."""
    kept = Job.create("echo", 1.0)
    await store.add(kept, b"")
    kept.start(2.0)
    kept.report_progress(3.0, 40)
    await store.update(kept)
    return kept


async def test_a_failed_write_loses_none_of_the_writes_batched_with_it(
        tmp_path: Path, pg_url: str) -> None:
    """A failed statement aborts a PostgreSQL transaction: the writer rolls it back and
    replays the writes before it, as it does when SQLite rolls a batch back."""
    async with opened(tmp_path, pg_url, "a") as store:
        kept = await progress_queued(store)
        with pytest.raises(Conflict):
            await store.add(kept.copy(), b"")     # the same id: the insert fails
        await store.flush()
        assert (await store.get(kept.id)).progress == 40
        assert store.stats()["write_errors"] == 1


async def test_a_recorded_run_with_a_taken_id_fails_alone(tmp_path: Path, pg_url: str) -> None:
    """Recorded runs go in as multi-row inserts; a duplicate id among them undoes only its own
    statement (a savepoint), then its chunk is tried row by row: the other runs and the
    writes batched before them are kept, as on SQLite."""
    async with opened(tmp_path, pg_url, "a") as store:
        kept = await progress_queued(store)
        runs = []
        for at in range(70):                      # more than one chunk
            job = Job.create("echo", 10.0 + at, sync=True)
            job.start(11.0 + at)
            job.succeed(12.0 + at)
            runs.append(job)
        runs[66].id = kept.id                     # in the second chunk
        for job in runs:
            assert store.record_inline(job, b"i", b"r")
        await store.flush()
        assert (await store.get(kept.id)).progress == 40
        assert await store.count() == 70          # kept and the 69 other runs
        assert (await store.get(runs[65].id)).status is Status.SUCCESSFUL


async def test_in_one_turn_a_failing_write_fails_alone_and_outcomes_read_in_one_query(
        tmp_path: Path, pg_url: str) -> None:
    """The reads and durable writes of one loop turn are one op on the server too: the
    duplicate fails alone (its transaction is rolled back and the writes before it replayed)."""
    async with opened(tmp_path, pg_url, "a") as store:
        done = await finished(store)
        first, second = Job.create("echo", 1.0), Job.create("echo", 2.0)
        results = await asyncio.gather(
            store.add(first, b"1"), store.add(first.copy(), b"again"), store.add(second, b"2"),
            store.outcome(done.id), store.outcome(done.id, 10), return_exceptions=True)
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], Conflict)
        assert results[3] == (done, b"r" * 100) and results[4] == (done, None)
        assert await store.input(first.id) == b"1" and await store.input(second.id) == b"2"
        assert store.stats()["write_errors"] == 1


async def test_a_node_carries_on_while_its_database_is_away(tmp_path: Path) -> None:
    """A running node whose PostgreSQL dies: submissions are refused with the reason (never
    acknowledged and lost), the node keeps answering, its lease renewals fail and are
    counted; once the server is back, the next submission is recorded and runs."""
    with PgServer(durable=True) as server:
        settings = settings_for(tmp_path / "home",
                                f'store = "{server.url}"\nnode = "n1"\nlease_ttl = 1\n')
        async with running_daemon(settings) as node, node.client(timeout=30.0) as client:
            async def finished(job: str) -> bool:
                return bool((await client.call("job.status", {"job": job}))["job"]["status"]
                            == "successful")

            done = (await client.call("submit", {"pts": "echo", "input": 1}))["job"]["id"]
            await until(lambda: finished(done), every=0.05)
            server.kill()
            with pytest.raises(RemoteError) as refused:
                await client.call("submit", {"pts": "echo", "input": 2})
            assert refused.value.code == "storage"

            async def renewals_failed() -> bool:
                store = (await client.call("status", {}))["store"]
                return bool(store["lease_failures"] >= 1)

            await until(renewals_failed, every=0.1)
            server.start()
            again = (await client.call("submit", {"pts": "echo", "input": 3}))["job"]["id"]
            await until(lambda: finished(again), every=0.05)
            assert (await client.result(again))["result"] == 3
            assert (await client.result(done))["result"] == 1
