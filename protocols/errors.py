"""The protocol's error model: a fixed set of codes and the exceptions that carry them.

Owns the codes every peer agrees on. An error on the wire is ``{code, message, details}``;
never a traceback. Imports nothing of ours (clients and workers install ``protocols`` alone)
and stays Python 3.8 compatible.
"""

from __future__ import annotations

from typing import Any, Dict, Optional


class ErrorCode:
    """Every code that may appear in an ``error`` message body (see SPEC.md, "Errors")."""

    MALFORMED = "malformed"          # frames or body cannot be decoded
    VERSION = "version"              # unsupported protocol version
    AUTH = "auth"                    # signature missing or wrong
    REPLAY = "replay"                # stale timestamp or a message id seen before
    TOO_LARGE = "too_large"          # message over the receiver's size limit
    UNKNOWN_OP = "unknown_op"        # no handler for this message type
    BAD_REQUEST = "bad_request"      # body fields missing or of the wrong type
    NOT_FOUND = "not_found"          # unknown PTS or job
    CONFLICT = "conflict"            # exists already, or another change is under way
    BUSY = "busy"                    # queue full: try again later
    UNAVAILABLE = "unavailable"      # PTS or daemon cannot serve now (restart budget, shutdown)
    TIMEOUT = "timeout"              # the run took longer than its timeout
    CANCELLED = "cancelled"          # the run was cancelled on request
    PTS_ERROR = "pts_error"          # the PTS itself raised or failed
    WORKER_DIED = "worker_died"      # the worker process ended during the run
    NOT_READY = "not_ready"          # the job has no result yet
    STORAGE = "storage"              # the job store cannot record (disk full, unwritable)
    FORBIDDEN = "forbidden"          # the caller may not do this
    INTERNAL = "internal"            # a bug in the daemon; details are in its log

    ALL = frozenset([
        MALFORMED, VERSION, AUTH, REPLAY, TOO_LARGE, UNKNOWN_OP, BAD_REQUEST, NOT_FOUND,
        CONFLICT, BUSY, UNAVAILABLE, TIMEOUT, CANCELLED, PTS_ERROR, WORKER_DIED, NOT_READY,
        STORAGE, FORBIDDEN, INTERNAL,
    ])


class PnsError(Exception):
    """Root of every error raised by ``protocols``."""


class ProtocolError(PnsError):
    """A message could not be accepted; carries the code to answer with."""

    def __init__(self, code: str, message: str, details: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    def to_body(self) -> Dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class RemoteError(ProtocolError):
    """The peer answered a request with an ``error`` message."""

    @classmethod
    def from_body(cls, body: Any) -> "RemoteError":
        if not isinstance(body, dict):
            return cls(ErrorCode.MALFORMED, "error reply without a body")
        code = body.get("code")
        message = body.get("message")
        details = body.get("details")
        code = code if isinstance(code, str) else ErrorCode.INTERNAL
        kind = Unauthenticated if code == ErrorCode.AUTH else cls
        return kind(
            code,
            message if isinstance(message, str) else "",
            details if isinstance(details, dict) else {},
        )

    def __str__(self) -> str:
        return "%s: %s" % (self.code, self.message)


class Unauthenticated(RemoteError):
    """The peer refused the message's signature (code ``auth``): the keys differ, or ours is
    missing. Raised as soon as the refusal arrives, instead of a timeout."""


class ClientTimeout(PnsError, TimeoutError):
    """No reply arrived within the call's timeout (the request may still run on the daemon)."""


class ClientClosed(PnsError):
    """The client was closed while calls were waiting."""
