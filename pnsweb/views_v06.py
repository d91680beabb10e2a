"""``/v0.6`` views for the default PTS's scripts, exchange dirs and hooks, and ``/echo``.

Owns translating those reference routes into daemon operations (``pts.script``, ``pts.files``,
``pts.hook``, ``demo.reset``) and their replies into the reference's envelope, plus the helpers
the other ``views_v06_*`` modules share: reading a JSON body, the optional ``{"timeout": n}``,
calling the daemon, a run's outcome as the reference showed it. Authentication is applied by the
route table (``routes_v06``), errors are rendered by ``pnsweb.errors``; views only raise.

The reference's one lock: every modifying operation (run, testrun, sleep, PUT init, config,
testinit, pnsconf, DELETE clean) asks the daemon to hold a slot of the default PTS while it runs
(:func:`locked`), so another one meanwhile is refused as busy at once, by whichever pnsweb.

Errors (see ``pnsweb.errors`` for the table): a daemon ``busy`` is 409 ``Conflict. Updating.``;
a hook that exits non-zero is 502 and a hook killed at its timeout 504, both with
``"result": returncode`` and the outcome as ``message``; the daemon unreachable is 503.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

from pnsweb.bodies import EMPTY, INLINE_BYTES, read_json_body
from pnsweb.errors import ApiError, command_text
from pnsweb.keys import BODY_PARSER, CLIENT, SETTINGS, STAMP
from pnsweb.views_v06_envelope import JSON_TYPE, ok

log = structlog.get_logger(__name__)
View = Callable[[web.Request], Awaitable[web.StreamResponse]]
QUICK_TIMEOUT = 15.0        # seconds for daemon calls that run nothing (scripts, files, specs)
RUN_MARGIN = 10.0           # seconds a run's reply may lag behind the run's own timeout
MAX_TIMEOUT = 24 * 3600.0


async def read_json(request: web.Request) -> Any:
    """The request body as JSON: an empty body is None; invalid JSON is a 400 naming why.

    Any content type is read as JSON (``curl -d`` sends a form type by default); the body
    limits and value checks of :mod:`pnsweb.bodies` apply (413, 400).
    """
    value = await read_json_body(request)
    return None if value is EMPTY else value


async def read_object(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` unless ``required``."""
    body = await read_json(request)
    if body is None and not required:
        return {}
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def timeout_of(body: Mapping[str, Any]) -> float | None:
    """The optional ``{"timeout": n}`` (seconds, positive); the daemon caps it per PTS."""
    value = body.get("timeout")
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT):
        raise ApiError(400, f"'timeout' must be a number of seconds, above 0 and at most "
                            f"{MAX_TIMEOUT:g}")
    return float(value)


async def call(request: web.Request, op: str, body: Any, *, timeout: float | None = None) -> Any:
    """One daemon operation; its errors propagate to the error middleware."""
    return await request.app[CLIENT].call(op, body, timeout=timeout or QUICK_TIMEOUT)


async def call_run(request: web.Request, op: str, body: dict[str, Any],
                   timeout: float | None) -> Any:
    """An operation that runs something: waits for the run's timeout (plus a margin)."""
    limit = request.app[SETTINGS].call_timeout
    if timeout is not None:
        body["timeout"] = timeout
        limit = min(limit, timeout + RUN_MARGIN)
    return await call(request, op, body, timeout=limit)


def outcome(result: Mapping[str, Any]) -> dict[str, Any]:
    """A script's outcome as the reference showed it: command, stdout, stderr, returncode."""
    return {
        "command": command_text(result.get("command")),
        "stdout": result.get("stdout", ""),
        "stderr": result.get("stderr", ""),
        "returncode": result.get("returncode"),
    }


def default_pts(request: web.Request) -> str:
    return request.app[SETTINGS].default_pts


def locked(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` for an operation under the reference's one lock: it holds a slot of the default
    PTS while it runs, so that another such operation meanwhile is busy (409) at once."""
    body["lock"] = default_pts(request)
    return body


def script_view(hook: str) -> View:
    """GET /init|/config|/run|/clean: the text of that script of the default PTS."""

    async def get_script(request: web.Request) -> web.StreamResponse:
        reply = await call(request, "pts.script", {"name": default_pts(request), "hook": hook})
        return ok(request, reply.get("text"), f"Getting the {hook} script OK")

    return get_script


def files_view(which: str) -> View:
    """GET /input|/output: ``{name: content}`` of the latest run's dir; null if there is none."""

    async def get_files(request: web.Request) -> web.StreamResponse:
        reply = await call(request, "pts.files", {"name": default_pts(request), "which": which})
        files = reply.get("files")
        if files is None:
            return ok(request, None, f"the {which} dir does not exist")
        return ok(request, files, f"{len(files)} files in the {which} dir")

    return get_files


def hook_view(hook: str) -> View:
    """PUT /init, PUT /config, DELETE /clean: run that script; optional ``{"timeout": n}``.

    ``result`` is the return code, ``message`` the outcome. A non-zero exit is 502 and a
    timeout 504 (with the same two fields); a second locked operation is 409.
    """

    async def run_hook(request: web.Request) -> web.StreamResponse:
        body = await read_object(request, required=False)
        timeout = timeout_of(body)
        request_body = locked(request, {"name": default_pts(request), "hook": hook})
        reply = await call_run(request, "pts.hook", request_body, timeout)
        result = reply.get("result")
        if result is None:
            return ok(request, 0, f"the PTS has no {hook} script: nothing to do")
        return ok(request, result.get("returncode"), outcome(result))

    return run_hook


async def reset_demo(request: web.Request) -> web.StreamResponse:
    """PUT /testinit (and /inittest): the packaged hello scripts back, old ones as ``.save``.

    ``result`` 0 and ``message`` ``""``, as the reference answered (its clients check
    ``result == 0``); which scripts were replaced goes to the log.
    """
    reply = await call(request, "demo.reset", locked(request, {}))
    log.info("demo_scripts_restored", restored=reply.get("restored", []))
    return ok(request, 0, "")


async def echo(request: web.Request) -> web.StreamResponse:
    """POST /echo: the body, unchanged; an empty body gives null, invalid JSON is 400."""
    value = await read_json(request)
    if (request.content_length or INLINE_BYTES + 1) <= INLINE_BYTES:
        return ok(request, value, "OK")
    # a large body's reply is written off the loop, as it was read
    envelope = {"result": value, "message": "OK", "timestamp": request.app[STAMP].now()}
    text = await request.app[BODY_PARSER].encode(envelope)
    return web.Response(text=text, content_type=JSON_TYPE)
