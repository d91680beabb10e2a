"""Reads and durable writes gathered per turn of the event loop, handed to the writer as one op.

Owns the queueing of the job store's reads and durable writes (a job accepted, started,
finished; a job's record and result read): those made within one turn of the loop go to the
writer thread as one op and are answered with one wake-up of the loop, instead of a hand-over
and a wake-up each (32 asynchronous jobs in flight make three durable writes per job, and
collecting their results one read or more each). The writer group-commits (see
:class:`pnsd.jobs.storedb.Writer`): each write fails alone, with its own error, unless the
whole transaction is given up (its commit fails, a full disk), which fails them all; nothing is
answered before the commit. Reads and writes keep their order, also against the store's other
ops: the store hands the gathered ones over before it queues any other. It knows nothing of
jobs; the SQL is the caller's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from pnsd.errors import StorageError
from pnsd.jobs.storedb import Outcomes, SqlFn, Writer

__all__ = ["TurnBatch"]

Gathered = list[tuple[SqlFn[Any], str, bool, asyncio.Future[Any]]]   # fn, what, writes, future


class TurnBatch:
    """The reads and durable writes of the current loop turn, not yet handed to the writer."""

    def __init__(self, writer: Callable[[], Writer | None]) -> None:
        self._writer = writer      # the store's writer, None once closed
        self._items: Gathered = []

    def write(self, fn: SqlFn[Any], what: str) -> asyncio.Future[Any]:
        """Queue a durable write; the future resolves once it is committed."""
        return self._gather(fn, what, True)

    def read(self, fn: SqlFn[Any], what: str) -> asyncio.Future[Any]:
        """Queue a read; the future resolves to its value (after the commit of any durable
        write it may have seen)."""
        return self._gather(fn, what, False)

    def _gather(self, fn: SqlFn[Any], what: str, writes: bool) -> asyncio.Future[Any]:
        if self._writer() is None:
            raise StorageError("the job store is not open")
        loop = asyncio.get_running_loop()
        if not self._items:
            loop.call_soon(self.hand_over)
        future: asyncio.Future[Any] = loop.create_future()
        self._items.append((fn, what, writes, future))
        return future

    def hand_over(self) -> None:
        """Queue the gathered items to the writer as one op (now: before any other op)."""
        items, self._items = self._items, []
        if not items:
            return
        writer = self._writer()
        if writer is None:
            _fail(items, StorageError("the job store is closed"))
            return
        try:
            op = writer.submit_batch([(fn, what, writes) for fn, what, writes, _f in items],
                                     what=f"run {len(items)} job store ops")
        except StorageError as exc:      # the writer crashed
            _fail(items, exc)
            return
        assert op.future is not None
        loop = asyncio.get_running_loop()
        op.future.add_done_callback(
            lambda done: loop.call_soon_threadsafe(_settle, items, done))


def _settle(items: Gathered, done: Future[Outcomes]) -> None:
    """On the loop: answer each item as the op's outcomes say."""
    error = done.exception()
    if error is not None:
        _fail(items, error)
        return
    for (_fn, _what, _writes, future), (value, exc) in zip(items, done.result(), strict=True):
        if future.done():        # its caller was cancelled: nobody to tell
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)


def _fail(items: Gathered, error: BaseException) -> None:
    for _fn, _what, _writes, future in items:
        if not future.done():
            future.set_exception(error)
