"""The error model of PNS: a fixed set of codes, and the one tree of exceptions that carry them.

Owns the codes every peer agrees on and the coded-error base every package of ours raises. An
error on the wire is ``{code, message, details}``; never a traceback. Imports nothing of ours
(protocols runs in any worker's interpreter) and stays Python 3.6 compatible (the stdio worker
runtime runs on 3.6).

The tree (pnsd and pnsweb import this module; it imports neither)::

    Exception
    └── PnsError                    every error our packages raise
        ├── CodedError              code + message + details: what an ``error`` message carries
        │   ├── ProtocolError       a message refused: it cannot be decoded, checked or encoded
        │   │                       (malformed, version, auth, replay, too_large, bad_request)
        │   ├── RemoteError         the peer answered a request with an ``error`` message
        │   │   └── Unauthenticated     ... with code ``auth``: the keys differ
        │   ├── pnsd.errors.DaemonError   the daemon's own (BadRequest, Busy, PtsFailed, ...)
        │   ├── pnsd.cli.common.CliError  a ``pnsd`` command's own, shown with its code
        │   └── pnsweb.errors.ApiError    an HTTP error reply (``status``), from a code or not
        ├── ClientTimeout           no reply within the call's timeout (also a TimeoutError)
        └── ClientClosed            the client closed while calls waited

A code is fixed when the error is made, never changed afterwards: each kind states its own
(``class Busy(DaemonError, code=ErrorCode.BUSY)``), or one is given to the constructor (an error
read off the wire, a failed job's). A PTS's failure reaches a client as a :class:`RemoteError`
with code ``pts_error``: it is an answer, not a refused message.
"""

from typing import Any, Dict, Mapping, Optional


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
    """Root of every error raised by our packages."""


class CodedError(PnsError):
    """An error with a protocol code (:class:`ErrorCode`), a message and details."""

    default_code = ErrorCode.INTERNAL     # this kind's code (the class keyword ``code``)

    def __init_subclass__(cls, code: Optional[str] = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.default_code = code

    def __init__(self, message: str, details: Optional[Mapping[str, Any]] = None, *,
                 code: Optional[str] = None) -> None:
        super().__init__(message)
        self._code = self.default_code if code is None else code
        self.message = message
        self.details: Dict[str, Any] = dict(details) if details else {}

    @property
    def code(self) -> str:
        """The code this error is answered with; set when it was made."""
        return self._code

    def to_body(self) -> Dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class ProtocolError(CodedError):
    """A message could not be accepted (or made); carries the code to answer with."""

    def __init__(self, code: str, message: str, details: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message, details, code=code)


class RemoteError(CodedError):
    """The peer answered a request with an ``error`` message."""

    def __init__(self, code: str, message: str, details: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message, details, code=code)

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
