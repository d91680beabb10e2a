"""The daemon's error tree. Every error carries the protocol code it is answered with.

Handlers raise these; the dispatcher turns them into ``error`` messages. Nothing here knows
about sockets or HTTP.
"""

from __future__ import annotations

from typing import Any

from protocols.errors import ErrorCode


class DaemonError(Exception):
    """Root of pnsd's errors; ``code`` is a :class:`protocols.errors.ErrorCode`."""

    code = ErrorCode.INTERNAL

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigError(DaemonError):
    code = ErrorCode.BAD_REQUEST


class InvalidSpec(DaemonError):
    code = ErrorCode.BAD_REQUEST


class BadRequest(DaemonError):
    code = ErrorCode.BAD_REQUEST


class NotFound(DaemonError):
    code = ErrorCode.NOT_FOUND


class Conflict(DaemonError):
    code = ErrorCode.CONFLICT


class Busy(DaemonError):
    code = ErrorCode.BUSY


class Unavailable(DaemonError):
    code = ErrorCode.UNAVAILABLE


class RunTimeout(DaemonError):
    code = ErrorCode.TIMEOUT


class Cancelled(DaemonError):
    code = ErrorCode.CANCELLED


class PtsFailed(DaemonError):
    """The PTS raised, exited non-zero or returned something unusable."""

    code = ErrorCode.PTS_ERROR


class WorkerDied(DaemonError):
    code = ErrorCode.WORKER_DIED


class TooLarge(DaemonError):
    """A message (input, result, reply) over the size limit: refused before it is sent."""

    code = ErrorCode.TOO_LARGE


class NotReady(DaemonError):
    code = ErrorCode.NOT_READY


class StorageError(DaemonError):
    code = ErrorCode.STORAGE
