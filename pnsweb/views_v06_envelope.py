"""The reference's JSON envelope for ``/v0.6``: timestamps, success and error bodies, JSON I/O.

Owns the shapes ``{"result", "message", "timestamp"}`` and ``{"error", "message", "timestamp"}``
and the clock that stamps them (strictly increasing within one app), and writing JSON that may
hold bytes (and never anything that is not JSON: :class:`NotJson`). Knows nothing of the
daemon, of authentication or of error statuses.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pnsweb.keys import STAMP

JSON_TYPE = "application/json"


class Stamp:
    """A wall clock whose readings strictly increase: ``max(time.time(), last + 1e-6)``.

    Reference clients order replies by their timestamps; two replies in the same clock tick
    (or across a clock step backwards) must still differ. One per app: no global state.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._last = 0.0

    def now(self) -> float:
        self._last = max(self._clock(), self._last + 1e-6)
        return self._last


def ok(request: web.Request, result: Any, message: Any = "") -> web.Response:
    """A 200 reply in the reference's envelope."""
    body = {"result": result, "message": message, "timestamp": request.app[STAMP].now()}
    return json_response(body)


def error_body(request: web.Request, error: str, message: Any) -> dict[str, Any]:
    """The reference's error body (the caller may add ``result``)."""
    return {"error": error, "message": message, "timestamp": request.app[STAMP].now()}


def json_response(
    body: Any, *, status: int = 200, content_type: str = JSON_TYPE,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return web.Response(
        text=dumps(body), status=status, content_type=content_type, headers=headers)


class NotJson(ValueError):
    """A value JSON cannot carry (NaN, Infinity, text that is not Unicode): the reply would
    not be JSON, so none is written."""


def dumps(value: Any) -> str:
    """JSON text; bytes become UTF-8 text, or ``{"base64": ...}`` when they are not UTF-8.

    Raises :class:`NotJson` rather than write NaN or Infinity (``allow_nan=False``).
    """
    try:
        return _ENCODER.encode(value)
    except ValueError as exc:
        raise NotJson(str(exc)) from None


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# made once: json.dumps with options builds a new encoder on every call
_ENCODER = json.JSONEncoder(default=_jsonable, allow_nan=False)
