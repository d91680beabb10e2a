"""The audit trail of deploy, replace and undeploy: who changed which PTS, when, and how it went.

Owns the ``audit`` table (created on :meth:`AuditLog.open`, beside the job tables, through the
job store's writer thread: :meth:`pnsd.jobs.store.JobStore.run_sql`) and the structlog event each
change is logged as (``pts_deployed``, ``pts_swapped``, ``pts_undeployed``, or the same with
``_failed``). It records what it is told; it must not decide or perform swaps.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import structlog

from pnsd.errors import StorageError
from pnsd.jobs.store import JobStore

log = structlog.get_logger(__name__)

OK = "ok"
EVENTS = {"deploy": "pts_deployed", "replace": "pts_swapped", "undeploy": "pts_undeployed"}
MAX_ERROR = 4000      # characters of an error message kept in the table
_CREATE = """
    CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, pts TEXT NOT NULL,
        action TEXT NOT NULL, who TEXT NOT NULL, old_version TEXT, new_version TEXT,
        outcome TEXT NOT NULL, error TEXT NOT NULL
    )
"""
_INDEX = "CREATE INDEX IF NOT EXISTS audit_pts ON audit (pts, id)"
_COLUMNS = ("at", "pts", "action", "who", "old_version", "new_version", "outcome", "error")


@dataclass
class AuditEvent:
    """One attempted change. ``outcome`` is "ok" or the error code; ``error`` its message."""

    pts: str
    action: str                      # deploy | replace | update | undeploy
    who: str
    at: float = 0.0
    old_version: str | None = None   # None: there was no old generation
    new_version: str | None = None   # None: nothing new (undeploy, or the spec did not parse)
    outcome: str = OK
    error: str = ""

    def public(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    """Audit events, logged and kept durably in the store's database."""

    def __init__(self, store: JobStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    async def open(self) -> None:
        if self._store.shared:   # a server store's schema has the table (pnsd.jobs.pgdb)
            return
        await self._store.run_sql(_create, write=True, what="create the audit table")

    async def record(self, event: AuditEvent) -> None:
        """Log ``event`` and commit it; a store failure is logged, never raised (the change
        it describes has happened or failed already)."""
        event.at = event.at or self._clock()
        event.error = event.error[:MAX_ERROR]
        name = EVENTS.get(event.action, "pts_changed")
        if event.outcome != OK:
            name += "_failed"
        log.log(logging.INFO if event.outcome == OK else logging.WARNING, name,
                **event.public())
        try:
            await self._store.run_sql(partial(_insert, event), write=True,
                                      what=f"audit {event.action} of {event.pts}")
        except StorageError as exc:
            log.error("audit_write_failed", pts=event.pts, action=event.action, error=exc.message)

    async def history(self, pts: str, *, limit: int = 100) -> list[AuditEvent]:
        """The events of ``pts``, newest first."""
        return await self._store.run_sql(partial(_select, pts, limit), write=False,
                                         what=f"read the audit of {pts}")


def _create(conn: sqlite3.Connection) -> None:
    conn.execute(_CREATE)
    conn.execute(_INDEX)


def _insert(event: AuditEvent, conn: sqlite3.Connection) -> None:
    values = event.public()
    conn.execute(f"INSERT INTO audit ({', '.join(_COLUMNS)}) "
                 f"VALUES ({', '.join(':' + c for c in _COLUMNS)})", values)


def _select(pts: str, limit: int, conn: sqlite3.Connection) -> list[AuditEvent]:
    rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM audit WHERE pts = ? "
                        "ORDER BY id DESC LIMIT ?", (pts, limit)).fetchall()
    return [AuditEvent(**{column: row[column] for column in _COLUMNS}) for row in rows]
