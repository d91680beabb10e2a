"""The writer's group commit: nothing answered before its commit, a failing write failing alone,
the batch's size and time bounds, and the open batch flushed on shutdown."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pnsd.errors import StorageError
from pnsd.jobs.storedb import Kind, Op, SqlFn, Writer
from pnsd.jobs.turnbatch import TurnBatch
from tests.waiting import until

WAIT = 5.0    # seconds any one step may take before the test fails


class Gate:
    """A COMMIT that stops until the test lets it go, and may then fail."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        self.fail = False
        self.armed = False


class GatedConn:
    """The writer's connection, with its COMMIT held at a :class:`Gate` when armed."""

    def __init__(self, conn: sqlite3.Connection, gate: Gate) -> None:
        self._conn = conn
        self._gate = gate

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self._gate.armed:
            self._gate.reached.set()
            assert self._gate.release.wait(WAIT)
            if self._gate.fail:
                raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class GatedWriter(Writer):
    def __init__(self, path: Path, gate: Gate, **kwargs: Any) -> None:
        super().__init__(path, max_db_bytes=None, **kwargs)
        self.gate = gate

    def _connect(self) -> sqlite3.Connection:
        return GatedConn(super()._connect(), self.gate)  # type: ignore[return-value]


async def started(tmp_path: Path, *, batch_size: int = 256, batch_delay: float = 3600.0,
                  gate: Gate | None = None) -> Writer:
    writer = GatedWriter(tmp_path / "t.db", gate or Gate(), batch_size=batch_size,
                         batch_delay=batch_delay)
    await asyncio.wait_for(asyncio.wrap_future(writer.start()), WAIT)
    await done(writer.submit(Kind.WRITE, lambda conn: conn.execute(
        "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"), durable=True, what="create"))
    return writer


async def done(op: Op) -> Any:
    assert op.future is not None
    return await asyncio.wait_for(asyncio.wrap_future(op.future), WAIT)


async def stop(writer: Writer) -> None:
    writer.gate.armed = False  # type: ignore[attr-defined]
    writer.gate.release.set()  # type: ignore[attr-defined]
    await done(writer.submit(Kind.STOP, None, durable=True, what="close"))
    await asyncio.wait_for(asyncio.to_thread(writer.join), WAIT)


@pytest.fixture
async def gate() -> AsyncIterator[Gate]:
    yield Gate()


def insert(k: int, v: str = "v") -> SqlFn[int]:
    def run(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t VALUES (?, ?)", (k, v))
        return k
    return run


def rows(path: Path) -> list[int]:
    """What another connection sees: only committed rows."""
    with sqlite3.connect(path) as conn:
        return [k for (k,) in conn.execute("SELECT k FROM t ORDER BY k")]


def hold(writer: Writer) -> tuple[threading.Event, Op]:
    """Keep the writer thread busy until the event is set, so that ops queue up behind."""
    go = threading.Event()
    return go, writer.submit(Kind.READ, lambda conn: go.wait(WAIT), durable=False, what="hold")


async def test_durable_writes_and_reads_after_them_are_answered_only_after_the_commit(
        tmp_path: Path, gate: Gate) -> None:
    writer = await started(tmp_path, gate=gate)
    try:
        gate.armed = True
        batch = TurnBatch(lambda: writer)
        writes = [batch.write(insert(k), f"insert {k}") for k in range(3)]
        read = batch.read(lambda conn: conn.execute("SELECT COUNT(*) FROM t").fetchone()[0],
                          "count")
        batch.hand_over()
        single = writer.submit(Kind.WRITE, insert(9), durable=True, what="insert 9")
        assert await asyncio.to_thread(gate.reached.wait, WAIT)
        assert not any(f.done() for f in [*writes, read])
        assert single.future is not None and not single.future.done()
        gate.release.set()
        assert await asyncio.wait_for(asyncio.gather(*writes), WAIT) == [0, 1, 2]
        assert await asyncio.wait_for(read, WAIT) == 3    # it saw the uncommitted writes
        assert await done(single) == 9
    finally:
        await stop(writer)


async def test_a_failed_commit_fails_every_write_of_its_batch_and_acknowledges_none(
        tmp_path: Path, gate: Gate) -> None:
    writer = await started(tmp_path, gate=gate)
    try:
        go, held = hold(writer)
        batch = TurnBatch(lambda: writer)
        writes = [batch.write(insert(k), f"insert {k}") for k in range(3)]
        batch.hand_over()
        single = writer.submit(Kind.WRITE, insert(9), durable=True, what="insert 9")
        writer.submit_nowait(insert(10), what="insert 10")
        gate.armed, gate.fail = True, True
        gate.release.set()
        go.set()
        await done(held)
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert all(isinstance(r, StorageError) and "could not commit" in r.message
                   for r in results)
        with pytest.raises(StorageError, match="could not commit"):
            await done(single)
        assert writer.lost == 1          # the non-durable one, counted
        gate.armed = False
        assert rows(tmp_path / "t.db") == []
        await done(writer.submit(Kind.WRITE, insert(11), durable=True, what="insert 11"))
        assert rows(tmp_path / "t.db") == [11]    # the writer goes on
    finally:
        await stop(writer)


async def test_a_failing_write_fails_alone_in_a_shared_transaction(tmp_path: Path) -> None:
    writer = await started(tmp_path)
    try:
        go, held = hold(writer)
        first = writer.submit(Kind.WRITE, insert(1), durable=True, what="insert 1")
        twin = writer.submit(Kind.WRITE, insert(1, "again"), durable=True, what="insert twin")
        after = writer.submit(Kind.WRITE, insert(2), durable=True, what="insert 2")
        commits = writer.commits
        go.set()
        await done(held)
        assert await done(first) == 1 and await done(after) == 2
        with pytest.raises(StorageError, match="insert twin"):
            await done(twin)
        assert writer.commits == commits + 1     # one transaction held all three
        assert rows(tmp_path / "t.db") == [1, 2]
        assert writer.write_errors == 1
    finally:
        await stop(writer)


def writes_then_fails(k: int) -> SqlFn[None]:
    def run(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES (?, 'partial')", (k,))
        raise ValueError("failed after writing")
    return run


async def test_a_write_that_wrote_before_failing_leaves_nothing_and_the_others_stay(
        tmp_path: Path) -> None:
    writer = await started(tmp_path)
    try:
        batch = TurnBatch(lambda: writer)
        before = batch.write(insert(1), "insert 1")
        partial = batch.write(writes_then_fails(5), "write partly")
        after = batch.write(insert(2), "insert 2")
        assert await asyncio.wait_for(before, WAIT) == 1
        with pytest.raises(ValueError, match="after writing"):
            await asyncio.wait_for(partial, WAIT)
        assert await asyncio.wait_for(after, WAIT) == 2
        assert rows(tmp_path / "t.db") == [1, 2]
    finally:
        await stop(writer)


async def test_a_batch_whose_transaction_is_given_up_fails_whole(tmp_path: Path) -> None:
    calls = [0]

    def once(conn: sqlite3.Connection) -> None:     # fails when replayed
        calls[0] += 1
        if calls[0] > 1:
            raise sqlite3.OperationalError("disk I/O error")
        conn.execute("INSERT INTO t VALUES (1, 'once')")

    writer = await started(tmp_path)
    try:
        batch = TurnBatch(lambda: writer)
        items = [batch.write(once, "insert once"), batch.write(writes_then_fails(5), "partly"),
                 batch.write(insert(2), "insert 2")]
        results = await asyncio.gather(*items, return_exceptions=True)
        assert all(isinstance(r, StorageError) and "could not commit" in r.message
                   for r in results)
        assert rows(tmp_path / "t.db") == []
    finally:
        await stop(writer)


async def test_a_full_batch_commits_without_waiting_for_its_delay(tmp_path: Path) -> None:
    writer = await started(tmp_path, batch_size=3)
    try:
        go, held = hold(writer)
        for k in range(7):
            writer.submit_nowait(insert(k), what=f"insert {k}")
        commits = writer.commits
        go.set()
        await done(held)
        await done(writer.submit(Kind.FLUSH, None, durable=True, what="flush"))
        assert writer.commits == commits + 3      # after 3, after 6, and the flush
        assert rows(tmp_path / "t.db") == list(range(7))
    finally:
        await stop(writer)


async def test_nothing_to_wait_for_commits_after_the_delay(tmp_path: Path) -> None:
    writer = await started(tmp_path, batch_delay=0.05)
    try:
        commits = writer.commits
        queued = time.monotonic()
        writer.submit_nowait(insert(1), what="insert 1")
        await until(lambda: writer.commits > commits, timeout=WAIT, every=0.005)
        assert writer.commits == commits + 1
        assert time.monotonic() - queued >= 0.05
        assert rows(tmp_path / "t.db") == [1]
    finally:
        await stop(writer)


@pytest.mark.parametrize(("delay", "commits"), [(3600.0, 1), (0.0, 2)])
async def test_queued_durable_writes_share_a_commit_until_the_delay_has_passed(
        tmp_path: Path, delay: float, commits: int) -> None:
    writer = await started(tmp_path, batch_delay=delay)
    try:
        go, held = hold(writer)
        ops = [writer.submit(Kind.WRITE, insert(k), durable=True, what=f"insert {k}")
               for k in (1, 2)]
        before = writer.commits
        go.set()
        await done(held)
        assert [await done(op) for op in ops] == [1, 2]
        assert writer.commits == before + commits
    finally:
        await stop(writer)


async def test_shutdown_commits_the_open_batch(tmp_path: Path) -> None:
    writer = await started(tmp_path)      # an hour's delay: only the stop commits them
    for k in range(5):
        writer.submit_nowait(insert(k), what=f"insert {k}")
    await stop(writer)
    assert rows(tmp_path / "t.db") == list(range(5))


async def test_a_durable_write_alone_commits_at_once(tmp_path: Path) -> None:
    writer = await started(tmp_path)      # an hour's delay, but somebody waits
    try:
        assert await done(writer.submit(Kind.WRITE, insert(1), durable=True, what="one")) == 1
        assert rows(tmp_path / "t.db") == [1]
    finally:
        await stop(writer)

