"""Node leases on a shared job store: how the nodes of a cluster learn that one of them died.

Each node keeps a row in the ``nodes`` table whose ``expires`` it pushes ``ttl`` seconds ahead
every ``ttl / 5`` seconds, on the database's clock (so clocks that differ between machines do
not matter). A row past ``expires`` is a dead node: a survivor takes its unfinished jobs over
(:func:`pnsd.jobs.recovery.reap`). A node that finds its row gone or re-owned was presumed dead
(it stalled longer than ``ttl``): it says so, counts it and claims a fresh lease; the jobs it
still runs are no longer its own, and the store refuses their outcomes
(:class:`pnsd.errors.NotOwner`). Owns the lease row and the renewal loop; it must not run
jobs or decide what happens to them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection
from functools import partial

import structlog

from pnsd.errors import StorageError
from pnsd.jobs.model import Job
from pnsd.jobs.recovery import DB_NOW, reap
from pnsd.jobs.store import JobStore

log = structlog.get_logger(__name__)

LEASE_TTL = 10.0   # seconds without a renewal after which a node is presumed dead


class NodeLease:
    """This node's lease row: claimed at start, renewed, given up at a graceful stop."""

    def __init__(self, store: JobStore, *, ttl: float = LEASE_TTL,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.ttl = ttl
        self.every = ttl / 5
        # reported with the store's figures (status, /metrics): times this node found its
        # lease taken (it stalled past ttl), renewals the database refused (it was away), and
        # jobs of dead nodes this node took over (failed or requeued)
        self.figures = store.figures
        self.figures.update(lease_ttl=ttl, lease_lost=0, lease_failures=0, reaped=0)
        self._clock = clock
        self._epoch = ""

    async def claim(self) -> None:
        """Write this node's row (a previous run's row under the same name becomes ours)."""
        self._epoch = secrets.token_hex(8)
        await self.store.run_sql(partial(_claim, self.store.node, self._epoch, self.ttl),
                                 write=True, what="claim the node lease")
        log.info("node_lease_claimed", node=self.store.node, ttl=self.ttl)

    async def keep(self, served: Callable[[], tuple[Collection[str], Collection[str]]],
                   resume: Callable[[Job], Awaitable[None]]) -> None:
        """Renew every ``ttl / 5`` seconds and take over the jobs of dead nodes: ``served()``
        names the PTS this node serves and the idempotent ones; ``resume`` runs a job taken
        over. Runs until cancelled; a database that is away is logged and retried."""
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.renew()
                names, idempotent = served()
                failed, requeued = await self.store.run_sql(
                    partial(reap, self.store.node, self._clock(), frozenset(names),
                            frozenset(idempotent)),
                    write=True, what="take over the jobs of dead nodes")
            except StorageError as exc:
                self.figures["lease_failures"] += 1
                log.error("node_lease_failed", node=self.store.node, error=exc.message)
                continue
            self.figures["reaped"] += len(failed) + len(requeued)
            for job in requeued:
                await resume(job)

    async def renew(self) -> None:
        held = await self.store.run_sql(
            partial(_renew, self.store.node, self._epoch, self.ttl), write=True,
            what="renew the node lease")
        if not held:
            self.figures["lease_lost"] += 1
            log.error("node_lease_lost", node=self.store.node,
                      reason="the lease lapsed and another node took this node's jobs over")
            await self.claim()

    async def release(self) -> None:
        """A graceful stop: expire the row now, so a survivor takes what is left at once."""
        try:
            await self.store.run_sql(partial(_release, self.store.node, self._epoch),
                                     write=True, what="release the node lease")
        except StorageError as exc:
            log.error("node_lease_failed", node=self.store.node, error=exc.message)


def _claim(node: str, epoch: str, ttl: float, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO nodes (name, epoch, expires, started, host, pid) "
        f"VALUES (?, ?, {DB_NOW} + ?, {DB_NOW}, ?, ?) ON CONFLICT (name) DO UPDATE SET "
        "epoch = excluded.epoch, expires = excluded.expires, started = excluded.started, "
        "host = excluded.host, pid = excluded.pid",
        (node, epoch, ttl, socket.gethostname(), os.getpid()))


def _renew(node: str, epoch: str, ttl: float, conn: sqlite3.Connection) -> bool:
    cursor = conn.execute(f"UPDATE nodes SET expires = {DB_NOW} + ? WHERE name = ? "
                          "AND epoch = ?", (ttl, node, epoch))
    return bool(cursor.rowcount)


def _release(node: str, epoch: str, conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE nodes SET expires = 0 WHERE name = ? AND epoch = ?", (node, epoch))
