"""Durable writes gathered per turn of the event loop, handed to the writer thread as one op.

Owns the queueing of the job store's durable writes (a job accepted, started, finished): those
made within one turn of the loop go to the writer as one op, committed in one transaction and
answered with one wake-up of the loop, instead of a hand-over, a commit and a wake-up each
(32 asynchronous jobs in flight make three such writes per job). Each write still runs in a
savepoint of its own: one that fails fails alone, with its own error, unless SQLite gave up the
whole transaction (a full disk), which fails them all. Writes keep their order, also against
the store's other ops: the store hands the gathered ones over before it queues any other.
It knows nothing of jobs; the SQL is the caller's.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

from pnsd.errors import StorageError
from pnsd.jobs.storedb import Kind, SqlFn, Writer, translate

__all__ = ["TurnBatch"]

Outcomes = list[tuple[Any, Exception | None]]   # each write's value or error, in order


class TurnBatch:
    """The durable writes of the current loop turn, not yet handed to the writer."""

    def __init__(self, writer: Callable[[], Writer | None]) -> None:
        self._writer = writer      # the store's writer, None once closed
        self._items: list[tuple[SqlFn[Any], str, asyncio.Future[Any]]] = []

    def write(self, fn: SqlFn[Any], what: str) -> asyncio.Future[Any]:
        """Queue a durable write; the future resolves once it is committed."""
        if self._writer() is None:
            raise StorageError("the job store is not open")
        loop = asyncio.get_running_loop()
        if not self._items:
            loop.call_soon(self.hand_over)
        future: asyncio.Future[Any] = loop.create_future()
        self._items.append((fn, what, future))
        return future

    def hand_over(self) -> None:
        """Queue the gathered writes to the writer as one op (now: before any other op)."""
        items, self._items = self._items, []
        if not items:
            return
        writer = self._writer()
        if writer is None:
            _fail(items, StorageError("the job store is closed"))
            return
        fns = [(fn, what) for fn, what, _future in items]
        try:
            op = writer.submit(Kind.WRITE, partial(_each, fns), durable=True,
                               what=f"record {len(items)} job changes")
        except StorageError as exc:      # the writer crashed
            _fail(items, exc)
            return
        assert op.future is not None
        loop = asyncio.get_running_loop()
        op.future.add_done_callback(
            lambda done: loop.call_soon_threadsafe(_settle, items, done))


def _each(fns: list[tuple[SqlFn[Any], str]], conn: sqlite3.Connection) -> Outcomes:
    """On the writer thread: each write in a savepoint of its own."""
    outcomes: Outcomes = []
    for fn, what in fns:
        conn.execute("SAVEPOINT item")
        try:
            value = fn(conn)
        except Exception as exc:
            if not conn.in_transaction:   # SQLite rolled back everything: all of them fail
                raise
            conn.execute("ROLLBACK TO item")
            conn.execute("RELEASE item")
            outcomes.append((None, translate(exc, what)))
        else:
            conn.execute("RELEASE item")
            outcomes.append((value, None))
    return outcomes


def _settle(items: list[tuple[SqlFn[Any], str, asyncio.Future[Any]]],
            done: Future[Outcomes]) -> None:
    """On the loop: answer each write as the committed op says."""
    error = done.exception()
    if error is not None:
        _fail(items, error)
        return
    for (_fn, _what, future), (value, exc) in zip(items, done.result(), strict=True):
        if future.done():        # its caller was cancelled: nobody to tell
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)


def _fail(items: list[tuple[SqlFn[Any], str, asyncio.Future[Any]]],
          error: BaseException) -> None:
    for _fn, _what, future in items:
        if not future.done():
            future.set_exception(error)
