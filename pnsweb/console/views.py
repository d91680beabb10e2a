"""The console's node, PTS, plot and steering endpoints (administrators only).

Owns what the console's node, PTS, plots and deploy pages read and send: the daemon's
``status`` as the node's state and the link between pnsweb and pnsd (a daemon that does not
answer is shown as a link down, not an error), each PTS with its workers, spec, declared
interface and deploy history (``pts.describe`` and ``pts.history``), the rolling window of
finished runs (``stats``) and deploy, replace and undeploy from a spec written as TOML or JSON.
A spec's errors are answered 400 with ``errors``: ``[{field, key, line, message}]``, where
``field`` is the form field that caused them (``name``, ``spec``) and, when the error names a
spec key, ``key`` and the ``line`` of the text that sets it, so the page shows each error next
to its cause. The values of a spec's ``env`` are never sent to the page (they may hold
credentials).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import tomllib
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pnsweb.bodies import read_json_body
from pnsweb.console.sessions import console_user
from pnsweb.errors import ApiError
from pnsweb.keys import CLIENT, SETTINGS
from pnsweb.views_v06_envelope import json_response
from protocols.errors import ErrorCode, PnsError, RemoteError
from protocols.version import __version__

STATUS_WAIT = 3.0        # seconds the node page waits for the daemon's status
SWAP_WAIT = 300.0        # a deploy or replace: start, init and self-test
HISTORY = 20             # audit entries shown per PTS
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HIDDEN = "(hidden)"
_KEY_IN_MESSAGE = re.compile(r"PTS [^:]+: '([A-Za-z_]+)'|unknown keys \['([A-Za-z_]+)'")


async def node(request: web.Request) -> web.StreamResponse:
    """The daemon (version, uptime, store) and the link to it, one line per node."""
    await console_user(request, admin=True)
    asked = time.perf_counter()
    try:
        status = await request.app[CLIENT].call("status", {}, timeout=STATUS_WAIT)
    except (PnsError, TimeoutError) as exc:
        link = {"up": False, "reason": str(exc) or type(exc).__name__}
        return json_response({"web": {"version": __version__}, "nodes": [
            {"name": "pnsd", "link": link}]})
    link = {"up": True, "round_trip_ms": round(1000 * (time.perf_counter() - asked), 2)}
    daemon = {key: status.get(key) for key in ("version", "protocol", "uptime", "accepting")}
    busy = {name: {"running": info.get("running", 0), "queued": info.get("queued", 0)}
            for name, info in (status.get("pts") or {}).items()}
    return json_response({"web": {"version": __version__}, "nodes": [
        {"name": "pnsd", "link": link, "daemon": daemon, "store": status.get("store") or {},
         "refusals": status.get("refusals") or {}, "pts": busy,
         "retiring": status.get("retiring") or []}]})


async def pts_list(request: web.Request) -> web.StreamResponse:
    """Every PTS with its state, its load and its workers."""
    await console_user(request, admin=True)
    client = request.app[CLIENT]
    status, listing = await asyncio.gather(
        client.call("status", {}, timeout=STATUS_WAIT),
        client.call("pts.list", {}, timeout=STATUS_WAIT))
    described = {entry["name"]: entry for entry in listing.get("pts") or []}
    rows = [{"name": name, "description": described.get(name, {}).get("description", ""), **info}
            for name, info in sorted((status.get("pts") or {}).items())]
    return json_response({"pts": rows})


async def pts_one(request: web.Request) -> web.StreamResponse:
    """One PTS: its spec (``env`` values hidden), state and deploy history."""
    await console_user(request, admin=True)
    name = request.match_info["name"]
    client = request.app[CLIENT]
    try:
        described = await client.call("pts.describe", {"name": name}, timeout=STATUS_WAIT)
    except RemoteError as exc:
        if exc.code in (ErrorCode.NOT_FOUND, ErrorCode.BAD_REQUEST):
            raise ApiError(404, f"no PTS named {name!r}") from exc
        raise
    try:
        history = (await client.call("pts.history", {"name": name, "limit": HISTORY},
                                     timeout=STATUS_WAIT))["events"]
    except RemoteError as exc:
        if exc.code != ErrorCode.UNAVAILABLE:     # a daemon that does not deploy has none
            raise
        history = []
    spec = dict(described.get("spec") or {})
    if isinstance(spec.get("env"), Mapping):
        spec["env"] = dict.fromkeys(spec["env"], HIDDEN)
    return json_response({"name": name, "spec": spec, "state": described.get("state") or {},
                          "history": history})


async def stats(request: web.Request) -> web.StreamResponse:
    """The daemon's rolling window of finished runs per PTS."""
    await console_user(request, admin=True)
    text = request.query.get("span", "600")
    if not text.isdigit() or not 5 <= int(text) <= 600:
        raise ApiError(400, "span must be whole seconds from 5 to 600")
    figures = await request.app[CLIENT].call("stats", {"span": int(text)}, timeout=STATUS_WAIT)
    return json_response(figures)


# -- steering -------------------------------------------------------------------------------


async def deploy(request: web.Request) -> web.StreamResponse:
    """Deploy (``action`` "deploy") or replace ("replace") a PTS from ``{format, text}``."""
    user = await console_user(request, admin=True)
    body = await _body(request)
    action = body.get("action", "deploy")
    if action not in ("deploy", "replace"):
        raise _invalid("action", "must be deploy or replace")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise _invalid("spec", "write the spec: one [pts.NAME] table (TOML) or its JSON")
    name, spec = parse_spec_text(text, body.get("format", "toml"), body.get("name"))
    try:
        reply = await request.app[CLIENT].call(
            f"pts.{action}", {"name": name, "spec": spec, "who": user.name}, timeout=SWAP_WAIT)
    except RemoteError as exc:
        raise _refused(exc, text) from exc
    return json_response({"swap": reply})


async def undeploy(request: web.Request) -> web.StreamResponse:
    user = await console_user(request, admin=True)
    name = request.match_info["name"]
    try:
        reply = await request.app[CLIENT].call(
            "pts.undeploy", {"name": name, "who": user.name}, timeout=SWAP_WAIT)
    except RemoteError as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            raise ApiError(404, f"no PTS named {name!r}") from exc
        raise
    return json_response({"swap": reply})


async def _body(request: web.Request) -> Mapping[str, Any]:
    body = await read_json_body(request, limit=request.app[SETTINGS].max_body)
    if not isinstance(body, Mapping):
        raise ApiError(400, "the body must be a JSON object")
    return body


def parse_spec_text(text: str, form: Any, given: Any) -> tuple[str, dict[str, Any]]:
    """``(name, table)`` from a spec's text: TOML with one ``[pts.NAME]`` table, or JSON (that
    table's keys, or ``{"pts": {NAME: {...}}}``); ``given`` names the PTS when the text does
    not."""
    if form not in ("toml", "json"):
        raise _invalid("format", "must be toml or json")
    try:
        document = tomllib.loads(text) if form == "toml" else json.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _invalid("spec", f"not TOML: {exc}", line=_toml_line(exc)) from None
    except json.JSONDecodeError as exc:
        raise _invalid("spec", f"not JSON: {exc.msg}", line=exc.lineno) from None
    if not isinstance(document, dict):
        raise _invalid("spec", "must be a table of spec keys")
    tables = document.get("pts")
    if isinstance(tables, dict) and set(document) == {"pts"}:
        if len(tables) != 1 or not isinstance(next(iter(tables.values())), dict):
            raise _invalid("spec", "must hold exactly one [pts.NAME] table")
        name, table = next(iter(tables.items()))
        if given not in (None, "", name):
            raise _invalid("name", f"the spec defines {name!r}, not {given!r}")
    else:
        name, table = given, document
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise _invalid("name", "a PTS name: letters, digits, '_', '.', '-' (at most 64)")
    return name, table


def _refused(exc: RemoteError, text: str) -> ApiError:
    """The daemon's refusal of a spec, placed next to the field (and line) that caused it."""
    if exc.code not in (ErrorCode.BAD_REQUEST, ErrorCode.CONFLICT, ErrorCode.TIMEOUT,
                        ErrorCode.UNAVAILABLE, ErrorCode.PTS_ERROR, ErrorCode.NOT_FOUND):
        return ApiError(502, f"the daemon answered {exc.code}: {exc.message}")
    found = _KEY_IN_MESSAGE.search(exc.message)
    key = next((k for k in found.groups() if k), None) if found else None
    stage = exc.details.get("stage")
    if key is None and stage == "selftest":
        key = "selftest"
    field = "name" if exc.code in (ErrorCode.CONFLICT, ErrorCode.NOT_FOUND) else "spec"
    status = {ErrorCode.CONFLICT: 409, ErrorCode.NOT_FOUND: 404}.get(exc.code, 400)
    error = {"field": field, "key": key, "line": _line_of(text, key), "stage": stage,
             "message": exc.message}
    return ApiError(status, exc.message, extra={"errors": [error], "code": exc.code})


def _invalid(field: str, message: str, *, line: int | None = None) -> ApiError:
    return ApiError(400, f"{field}: {message}", extra={"errors": [
        {"field": field, "key": None, "line": line, "stage": None, "message": message}]})


def _line_of(text: str, key: str | None) -> int | None:
    """The first line of ``text`` that sets ``key`` (TOML ``key =`` or JSON ``"key":``)."""
    if key is None:
        return None
    pattern = re.compile(rf'^\s*(?:{re.escape(key)}\s*=|"{re.escape(key)}"\s*:)|[{{,]\s*'
                         rf'"{re.escape(key)}"\s*:')
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.search(line):
            return number
    return None


def _toml_line(exc: tomllib.TOMLDecodeError) -> int | None:
    found = re.search(r"line (\d+)", str(exc))
    return int(found.group(1)) if found else None
