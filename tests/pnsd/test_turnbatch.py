"""Durable writes of one loop turn: one op and one commit, each write failing alone, in order."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pnsd.errors import StorageError
from pnsd.jobs.storedb import Kind, SqlFn, Writer
from pnsd.jobs.turnbatch import TurnBatch


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[Writer]:
    writer = Writer(tmp_path / "t.db", batch_size=256, batch_delay=0.005, max_db_bytes=None)
    await asyncio.wrap_future(writer.start())
    op = writer.submit(Kind.WRITE, lambda conn: conn.execute(
        "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"), durable=True, what="create")
    assert op.future is not None
    await asyncio.wrap_future(op.future)
    yield writer
    stop = writer.submit(Kind.STOP, None, durable=True, what="close")
    assert stop.future is not None
    await asyncio.wrap_future(stop.future)
    await asyncio.to_thread(writer.join)


def insert(k: int, v: str) -> SqlFn[int]:
    def run(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t VALUES (?, ?)", (k, v))
        return k
    return run


async def read(writer: Writer) -> list[tuple[int, str]]:
    op = writer.submit(Kind.READ, lambda conn: conn.execute(
        "SELECT k, v FROM t ORDER BY k").fetchall(), durable=False, what="read")
    assert op.future is not None
    return [tuple(row) for row in await asyncio.wrap_future(op.future)]


async def test_the_writes_of_one_turn_are_one_commit_and_each_gets_its_value(
        writer: Writer) -> None:
    batch = TurnBatch(lambda: writer)
    commits = writer.commits
    futures = [batch.write(insert(k, f"v{k}"), f"insert {k}") for k in range(20)]
    assert await asyncio.gather(*futures) == list(range(20))
    assert writer.commits == commits + 1
    assert len(await read(writer)) == 20


async def test_a_failing_write_fails_alone_with_its_own_error(writer: Writer) -> None:
    batch = TurnBatch(lambda: writer)
    first = batch.write(insert(1, "a"), "insert 1")
    twin = batch.write(insert(1, "again"), "insert twin")
    after = batch.write(insert(2, "b"), "insert 2")
    results = await asyncio.gather(first, twin, after, return_exceptions=True)
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], StorageError) and "insert twin" in results[1].message
    assert await read(writer) == [(1, "a"), (2, "b")]


async def test_gathered_writes_go_before_an_op_queued_after_them(writer: Writer) -> None:
    batch = TurnBatch(lambda: writer)
    pending = batch.write(insert(7, "seven"), "insert 7")
    batch.hand_over()          # what the store does before it queues any other op
    assert await read(writer) == [(7, "seven")]
    assert await pending == 7


async def test_a_closed_store_refuses_at_once() -> None:
    batch = TurnBatch(lambda: None)
    with pytest.raises(StorageError):
        batch.write(insert(1, "a"), "insert 1")
