"""The job model: one run of a PTS and the states it moves through.

Owns :class:`Job`, its statuses (OGC API - Processes) and the rules for moving between them.
It is a pure state machine: it must not do I/O, read the clock or know how jobs are stored or
run. Callers pass ``now``; illegal moves raise :class:`pnsd.errors.Conflict`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pnsd.errors import Conflict

JOB_ID_RE = re.compile(r"[0-9a-f]{32}")
RESTART_REASON = "daemon restarted"


class Status(StrEnum):
    ACCEPTED = "accepted"
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    DISMISSED = "dismissed"


FINISHED = frozenset({Status.SUCCESSFUL, Status.FAILED, Status.DISMISSED})

# accepted -> failed covers runs that never started: daemon restarted, PTS undeployed.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.ACCEPTED: frozenset({Status.RUNNING, Status.DISMISSED, Status.FAILED}),
    Status.RUNNING: frozenset({Status.SUCCESSFUL, Status.FAILED, Status.DISMISSED}),
    Status.SUCCESSFUL: frozenset(),
    Status.FAILED: frozenset(),
    Status.DISMISSED: frozenset(),
}


class Row(Protocol):
    """What :meth:`Job.from_row` reads: a mapping or a ``sqlite3.Row``."""

    def __getitem__(self, key: str, /) -> Any: ...


# Job ids: 128 bits from the system's randomness (os.urandom), so that nobody can guess
# another user's job. Each read is a system call, slow on some machines (bench/FINDINGS.md,
# "Micro-measurements"), so it is read ID_BYTES * ID_BATCH bytes at a time and cut into ids.
ID_BYTES = 16
ID_BATCH = 256
_id_pool: list[str] = []


def new_job_id() -> str:
    """A fresh job id: 32 lowercase hex characters of the system's randomness."""
    if not _id_pool:
        block = os.urandom(ID_BYTES * ID_BATCH).hex()
        step = 2 * ID_BYTES
        _id_pool.extend(block[i:i + step] for i in range(0, len(block), step))
    return _id_pool.pop()


def valid_job_id(text: object) -> bool:
    """True for exactly 32 lowercase hex characters (what :func:`new_job_id` makes)."""
    return isinstance(text, str) and JOB_ID_RE.fullmatch(text) is not None


@dataclass(kw_only=True)
class Job:
    id: str
    pts: str
    status: Status
    created: float
    updated: float
    started: float | None = None
    finished: float | None = None
    progress: int = 0
    message: str = ""
    reason: str = ""  # failure code: "timeout", "daemon restarted", ...
    sync: bool = False  # a synchronous run, recorded with group commit
    input_size: int = 0
    result_size: int = 0
    version: str = ""  # the PTS version that ran it
    owner: str = ""    # the web user who created it; "" for the operator (a direct client)
    idempotency_key: str | None = None  # the submitter's key: a repeat returns this job
    node: str = ""     # the node that runs it (stamped by the store that records it)

    @classmethod
    def create(cls, pts: str, now: float, *, sync: bool = False, version: str = "",
               owner: str = "") -> Job:
        """A new accepted job with a fresh id."""
        return cls(
            id=new_job_id(), pts=pts, status=Status.ACCEPTED, created=now, updated=now,
            sync=sync, version=version, owner=owner,
        )

    def visible_to(self, owner: str | None) -> bool:
        """Whether ``owner`` may see this job (None: the operator or an admin, who see all)."""
        return owner is None or owner == self.owner

    def copy(self) -> Job:
        """A shallow copy (``copy.copy`` goes through the pickling hooks, several times slower)."""
        twin = object.__new__(Job)
        twin.__dict__.update(self.__dict__)
        return twin

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    def start(self, now: float) -> None:
        self._move(Status.RUNNING, now)
        self.started = now

    def succeed(self, now: float) -> None:
        self._move(Status.SUCCESSFUL, now)
        self.finished = now
        self.progress = 100

    def fail(self, now: float, code: str, message: str) -> None:
        self._move(Status.FAILED, now)
        self.finished = now
        self.reason = code
        self.message = message

    def dismiss(self, now: float, message: str = "dismissed") -> None:
        self._move(Status.DISMISSED, now)
        self.finished = now
        self.message = message

    def report_progress(self, now: float, percent: int, message: str | None = None) -> None:
        """Record progress of a running job; ``percent`` is clamped to 0-100."""
        if self.status is not Status.RUNNING:
            raise Conflict(
                f"job {self.id} is {self.status.value}, not running: no progress to report",
                job=self.id, status=self.status.value,
            )
        self.progress = max(0, min(100, int(percent)))
        if message is not None:
            self.message = message
        self.updated = now

    def requeue(self, now: float) -> None:
        """Put an unfinished job back to accepted after a daemon restart lost its run.

        Only recovery does this; it is not a transition a running daemon makes.
        """
        if self.is_finished:
            raise Conflict(
                f"job {self.id} is {self.status.value}: a finished job cannot be requeued",
                job=self.id, status=self.status.value,
            )
        self.status = Status.ACCEPTED
        self.started = None
        self.progress = 0
        self.message = "requeued after daemon restart"
        self.updated = now

    def public(self) -> dict[str, Any]:
        """Plain data for replies."""
        return {
            "id": self.id,
            "pts": self.pts,
            "status": self.status.value,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "updated": self.updated,
            "progress": self.progress,
            "message": self.message,
            "reason": self.reason,
            "sync": self.sync,
            "version": self.version,
            "owner": self.owner,
            "node": self.node,
        }

    def to_row(self) -> dict[str, Any]:
        """Column values for the store (no blobs)."""
        row = self.public()
        row["sync"] = int(self.sync)
        row["input_size"] = self.input_size
        row["result_size"] = self.result_size
        row["idem_key"] = self.idempotency_key
        return row

    @classmethod
    def from_row(cls, row: Row) -> Job:
        return cls(
            id=row["id"],
            pts=row["pts"],
            status=Status(row["status"]),
            created=row["created"],
            started=row["started"],
            finished=row["finished"],
            updated=row["updated"],
            progress=row["progress"],
            message=row["message"],
            reason=row["reason"],
            sync=bool(row["sync"]),
            input_size=row["input_size"],
            result_size=row["result_size"],
            version=row["version"],
            owner=row["owner"],
            idempotency_key=row["idem_key"],
            node=row["node"],
        )

    def _move(self, to: Status, now: float) -> None:
        if to not in TRANSITIONS[self.status]:
            raise Conflict(
                f"job {self.id} cannot go from {self.status.value} to {to.value}",
                job=self.id, status=self.status.value, to=to.value,
            )
        self.status = to
        self.updated = now
