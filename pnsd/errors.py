"""The daemon's errors: a branch of the one tree drawn in :mod:`protocols.errors`.

Every error carries the protocol code it is answered with, fixed by its kind. Handlers raise
these; the server turns them into ``error`` messages. Nothing here knows about sockets or HTTP.
"""

from __future__ import annotations

from typing import Any

from protocols.errors import CodedError, ErrorCode


class DaemonError(CodedError):
    """Root of pnsd's errors. A plain DaemonError is ``internal`` unless made with a ``code``
    (a failed job's error, answered with the code its record holds)."""

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message, details, code=code)


class ConfigError(DaemonError, code=ErrorCode.BAD_REQUEST):
    """The daemon's settings cannot be used."""


class InvalidSpec(DaemonError, code=ErrorCode.BAD_REQUEST):
    """A PTS spec is malformed, or what it names cannot be loaded or found."""


class BadRequest(DaemonError, code=ErrorCode.BAD_REQUEST):
    """A request's body is missing fields or has values of the wrong type."""


class NotFound(DaemonError, code=ErrorCode.NOT_FOUND):
    """No such PTS or job (or not one the caller may see)."""


class Conflict(DaemonError, code=ErrorCode.CONFLICT):
    """It exists already, or another change is under way."""


class NotOwner(Conflict):
    """Another node took the job over (this one's lease lapsed): its record wins."""


class Busy(DaemonError, code=ErrorCode.BUSY):
    """The PTS's queue is full: refused at once, try again later."""


class Unavailable(DaemonError, code=ErrorCode.UNAVAILABLE):
    """The PTS or the daemon cannot serve now (restart budget spent, shutting down)."""


class RunTimeout(DaemonError, code=ErrorCode.TIMEOUT):
    """The run (or a wait) took longer than its timeout."""


class Cancelled(DaemonError, code=ErrorCode.CANCELLED):
    """The run was cancelled (on request, or its generation was retired)."""


class PtsFailed(DaemonError, code=ErrorCode.PTS_ERROR):
    """The PTS raised, exited non-zero or returned something unusable."""


class WorkerDied(DaemonError, code=ErrorCode.WORKER_DIED):
    """The worker process ended during the run."""


class TooLarge(DaemonError, code=ErrorCode.TOO_LARGE):
    """A message (input, result, reply) over the size limit: refused before it is sent."""


class NotReady(DaemonError, code=ErrorCode.NOT_READY):
    """The job has no result yet."""


class StorageError(DaemonError, code=ErrorCode.STORAGE):
    """The job store cannot record (disk full, unwritable, closed)."""
