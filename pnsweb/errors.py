"""pnsweb's errors, their two shapes, and the error middleware each app has.

Owns :class:`ApiError` (what views raise), the single table mapping protocol error codes to HTTP
statuses (one place to read and change them), the two error shapes (:class:`ErrorShape`):
:data:`ENVELOPE`, the reference's ``{"error", "message", "timestamp"}`` that the ``/v0.6``
sub-app answers in, and
:data:`PROBLEM`, RFC 7807 ``application/problem+json`` ``{"type", "title", "status", "detail"}``
that the ``/v1`` sub-app and the root app answer in, and :func:`error_middleware`, which every
app (made by :func:`face_app`, or the root) has, built with its own shape: no path is looked at.
The root app's shape is :data:`PROBLEM`: the operations endpoints, a 404 or 405 for a path outside
every face, and what the root's own middlewares refuse. One exception keeps each face's callers
seeing one shape: an error the root raises for a request routed into a face (a malformed Host,
checked on the root before any face sees the request) is answered in that face's shape.
It must not call the daemon, and it never puts a traceback in a reply: unexpected exceptions are
logged and answered with a bare 500.

Decisions recorded here (routes document them too):

- A PTS that ran and failed (``pts_error``, ``worker_died``) is **502 Bad Gateway**: the request
  was understood and passed on, the program behind the gateway failed. A run killed at its
  timeout is **504 Gateway Timeout**. Both carry the run's outcome: on ``/v0.6`` as the
  ``message`` ({command, stdout, stderr, returncode}) plus ``"result": returncode`` (negative
  when killed), as reference clients look for it; elsewhere as an ``outcome`` member.
- ``busy`` is 429 with ``Retry-After`` (refused at once, not queued), except in the ``/v0.6``
  envelope (:attr:`ErrorShape.reference_statuses`), where the reference answered 409
  ``Conflict. Updating.``.
- The daemon down or restarting (``unavailable``, a client-side timeout, a closed client) is 503
  with ``Retry-After``; nothing is cached, so the next request after the daemon returns works.
- A value the reply cannot hold as JSON (NaN or Infinity in a PTS's result) is 502: the reply
  would not be JSON, and every body pnsweb writes is.
- ``auth``, ``replay`` and ``version`` from the daemon mean pnsweb and pnsd disagree (wrong key,
  clock skew, version): 502, never 401, which only ever means the caller's credentials.
"""

from __future__ import annotations

import http
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from pnsweb.keys import ERROR_SHAPE
from pnsweb.views_v06_envelope import NotJson, error_body, json_response
from protocols.errors import ClientClosed, ClientTimeout, CodedError, ErrorCode

PROBLEM_TYPE = "application/problem+json"
log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class CodeStatus:
    """How one protocol error code is answered over HTTP."""

    status: int
    retry_after: int | None = None     # seconds, sent as Retry-After
    v06_status: int | None = None      # a different status on /v0.6 (the reference's rule)


# The one table: protocol error code -> HTTP status. A code not listed is a 500.
CODE_STATUS: Mapping[str, CodeStatus] = {
    ErrorCode.BAD_REQUEST: CodeStatus(400),
    ErrorCode.MALFORMED: CodeStatus(400),
    ErrorCode.FORBIDDEN: CodeStatus(403),
    ErrorCode.NOT_FOUND: CodeStatus(404),
    ErrorCode.CONFLICT: CodeStatus(409),
    ErrorCode.CANCELLED: CodeStatus(409),          # the run was dismissed by someone else
    ErrorCode.NOT_READY: CodeStatus(409),          # /v1 answers OGC's result-not-ready itself
    ErrorCode.TOO_LARGE: CodeStatus(413),
    ErrorCode.BUSY: CodeStatus(429, retry_after=1, v06_status=409),
    ErrorCode.INTERNAL: CodeStatus(500),
    ErrorCode.UNKNOWN_OP: CodeStatus(501),         # the daemon is older than this pnsweb
    ErrorCode.PTS_ERROR: CodeStatus(502),
    ErrorCode.WORKER_DIED: CodeStatus(502),
    ErrorCode.AUTH: CodeStatus(502),               # pnsweb's key is wrong, not the caller's
    ErrorCode.REPLAY: CodeStatus(502),
    ErrorCode.VERSION: CodeStatus(502),
    ErrorCode.UNAVAILABLE: CodeStatus(503, retry_after=2),
    ErrorCode.TIMEOUT: CodeStatus(504),
    ErrorCode.STORAGE: CodeStatus(507),
}
DAEMON_RETRY_AFTER = 2        # seconds, for a daemon that does not answer

# The reference's error texts, and the same style for statuses it never sent.
V06_ERRORS: Mapping[int, str] = {
    400: "Bad request.",
    401: "Unauthorized. Authentication needed to modify.",
    403: "Forbidden.",
    404: "Not found.",
    405: "Method not allowed.",
    409: "Conflict. Updating.",
    413: "Payload too large.",
    429: "Too many requests.",
    500: "Internal server error.",
    502: "Processing failed.",
    503: "Service unavailable.",
    504: "Processing timed out.",
}


class ApiError(CodedError):
    """An error reply: views raise it, the error middleware renders it in its app's shape.

    A branch of the one error tree (:mod:`protocols.errors`): its ``code`` is the daemon's
    when it answers one (``extra["code"]``), else the code whose status it has, if any.
    ``detail`` is the human explanation. ``outcome`` is a run's
    ``{command, stdout, stderr, returncode}`` when there was one. ``extra`` adds members to a
    problem+json body (e.g. OGC fields); ``problem_type`` is its ``type`` URI.
    """

    def __init__(
        self,
        status: int,
        detail: str = "",
        *,
        title: str | None = None,
        problem_type: str = "about:blank",
        headers: Mapping[str, str] | None = None,
        outcome: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or _phrase(status), code=_code_of(status, extra))
        self.status = status
        self.detail = detail or _phrase(status)
        self.title = title or _phrase(status)
        self.problem_type = problem_type
        self.headers = dict(headers or {})
        self.outcome = dict(outcome) if outcome is not None else None
        self.extra = dict(extra or {})


def _code_of(status: int, extra: Mapping[str, Any] | None) -> str:
    code = (extra or {}).get("code")
    if isinstance(code, str):
        return code
    return next((c for c, mapped in CODE_STATUS.items() if mapped.status == status),
                ErrorCode.INTERNAL if status >= 500 else ErrorCode.BAD_REQUEST)


def from_remote(error: CodedError, *, v06: bool = False) -> ApiError:
    """The HTTP error for a daemon's error reply, per :data:`CODE_STATUS`."""
    mapped = CODE_STATUS.get(error.code, CodeStatus(500))
    status = mapped.v06_status if v06 and mapped.v06_status else mapped.status
    headers = {"Retry-After": str(mapped.retry_after)} if mapped.retry_after else {}
    details = error.details
    outcome = None
    if "returncode" in details:
        outcome = {key: details.get(key) for key in ("command", "stdout", "stderr", "returncode")}
        outcome["command"] = command_text(outcome["command"])
    detail = error.message or error.code
    if status >= 500 and error.code not in (ErrorCode.PTS_ERROR, ErrorCode.TIMEOUT):
        detail = f"the daemon answered {error.code}: {detail}"
    return ApiError(status, detail, headers=headers, outcome=outcome,
                    extra={"code": error.code})


def command_text(command: Any) -> str:
    """A run's argv as the reference showed it: the list's Python text, ``"['runPTS', '']"``."""
    if isinstance(command, list | tuple):
        return str([str(part) for part in command])
    return "" if command is None else str(command)


def daemon_unreachable(reason: str) -> ApiError:
    return ApiError(503, f"the daemon is not reachable: {reason}",
                    headers={"Retry-After": str(DAEMON_RETRY_AFTER)})


@dataclass(frozen=True)
class ErrorShape:
    """How one app's error replies look.

    ``render`` writes the reply; ``reference_statuses``: protocol codes are answered with the
    reference's statuses where it had its own (:attr:`CodeStatus.v06_status`).
    """

    render: Callable[[web.Request, ApiError], web.Response]
    reference_statuses: bool = False


def render_problem(request: web.Request, error: ApiError) -> web.Response:
    """``error`` as RFC 7807 problem+json (an ``outcome`` member for a run's outcome)."""
    problem = {"type": error.problem_type, "title": error.title, "status": error.status,
               "detail": error.detail, **error.extra}
    if error.outcome is not None:
        problem["outcome"] = error.outcome
    return json_response(problem, status=error.status, content_type=PROBLEM_TYPE,
                         headers=error.headers)


def render_envelope(request: web.Request, error: ApiError) -> web.Response:
    """``error`` in the reference's envelope: a run's outcome is the ``message``, its return
    code the ``result``."""
    message: Any = error.outcome if error.outcome is not None else error.detail
    body = error_body(request, V06_ERRORS.get(error.status, error.title + "."), message)
    if error.outcome is not None:
        body["result"] = error.outcome.get("returncode")
    return json_response(body, status=error.status, headers=error.headers)


PROBLEM = ErrorShape(render_problem)
ENVELOPE = ErrorShape(render_envelope, reference_statuses=True)


def face_app(shape: ErrorShape) -> web.Application:
    """A new sub-application whose errors are answered in ``shape`` by its own middleware."""
    app = web.Application(middlewares=[error_middleware(shape)])
    app[ERROR_SHAPE] = shape
    return app


def error_middleware(shape: ErrorShape) -> Middleware:
    """The middleware of an app answering in ``shape``: every error status gets a JSON body."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except ApiError as exc:
            error = exc
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            error = _from_http(exc)
        except CodedError as exc:     # the daemon's error reply, or a body the client cannot pack
            error = from_remote(exc, v06=shape.reference_statuses)
        except NotJson as exc:
            error = ApiError(502, f"the reply cannot be written as JSON: {exc}")
        except (ClientTimeout, ClientClosed) as exc:
            error = daemon_unreachable(str(exc))
        except Exception:     # the boundary: log it, answer without a traceback
            log.exception("request_failed", method=request.method, path=request.path)
            error = ApiError(500, "an unexpected error; the details are in the server's log")
        else:
            if response.status < 400 or response.prepared or _is_json(response):
                return response
            error = ApiError(response.status, response.reason or "")
        if error.status >= 500:
            log.warning("request_error", status=error.status, detail=error.detail)
        return _shape_for(request, shape).render(request, error)

    return errors


def _shape_for(request: web.Request, own: ErrorShape) -> ErrorShape:
    """``own``, unless the request was routed into a sub-app below this one (only the root's
    own middlewares raise for those): then that sub-app's shape."""
    routed = request.match_info.apps[-1]
    return own if routed is request.app else routed.get(ERROR_SHAPE, own)


def _from_http(exc: web.HTTPException) -> ApiError:
    """aiohttp's own errors (404, 405, 413, ...) keep their status and useful headers."""
    headers = {name: exc.headers[name] for name in ("Allow", "WWW-Authenticate", "Retry-After")
               if name in exc.headers}
    detail = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        detail = f"{exc.method} is not allowed here; allowed: {allowed}"
    return ApiError(exc.status, detail or "", headers=headers)


def _is_json(response: web.StreamResponse) -> bool:
    return response.content_type in ("application/json", PROBLEM_TYPE)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"
