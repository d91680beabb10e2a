"""The console's job endpoints: the list, a job with its input and outputs, its live events,
starting, cancelling and deleting jobs.

Owns the job pages' data. A user reaches their own jobs, an administrator everybody's (the
daemon filters by the ``owner`` sent with each call, as on ``/v1``; another user's job is 404).
A result is shown as JSON; binary values in it (bytes anywhere within the first levels) become
outputs of their own, served raw by ``outputs/{n}``: PNG, JPEG, GIF and WebP inline as images
(recognised by their first bytes, never by a name the PTS chose), anything else as a download.
The event stream relays the daemon's ``job.watch`` as Server-Sent Events, resuming after
``Last-Event-ID`` (which a browser's ``EventSource`` sends when it reconnects), with a comment
line as heartbeat, and ends when the job ends.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from pnsweb.bodies import read_json_body
from pnsweb.console.sessions import console_user
from pnsweb.errors import ApiError
from pnsweb.keys import CLIENT, DaemonClient
from pnsweb.views_v06_envelope import json_response
from pnsweb.views_v1_jobs import stream_events
from protocols.errors import ErrorCode, RemoteError

CALL_WAIT = 10.0
PAGE = 25
MAX_PAGE = 200
DEPTH = 4                # levels of a result searched for binary outputs
IMAGES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
          (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))
OCTETS = "application/octet-stream"
_GONE = (ErrorCode.NOT_FOUND, ErrorCode.BAD_REQUEST)    # bad_request: a malformed id


async def acting(request: web.Request) -> tuple[str, str | None]:
    """The user's name and the ``owner`` to read jobs as (None: an administrator, all jobs)."""
    user = await console_user(request)
    return user.name, None if user.admin else user.name


def _as(owner: str | None) -> dict[str, str]:
    return {} if owner is None else {"owner": owner}


async def job_call(client: DaemonClient, op: str, job_id: str, owner: str | None) -> Any:
    try:
        return await client.call(op, {"job": job_id, **_as(owner)}, timeout=CALL_WAIT)
    except RemoteError as exc:
        if exc.code in _GONE:
            raise ApiError(404, f"no job {job_id[:64]!r}") from exc
        raise


async def jobs(request: web.Request) -> web.StreamResponse:
    """A page of jobs, newest first, filtered by ``pts``, ``status``, ``since``/``until``
    (epoch seconds, against ``created``) and (administrators) ``owner``."""
    _name, owner = await acting(request)
    query = request.query
    ask: dict[str, Any] = {"limit": _number(query, "limit", PAGE, 1, MAX_PAGE),
                           "offset": _number(query, "offset", 0, 0, 2**62), **_as(owner)}
    for key in ("pts", "status"):
        if query.get(key):
            ask[key] = query[key]
    for key in ("since", "until"):
        if query.get(key):
            ask[key] = _instant(query, key)
    if query.get("owner") and owner is None:
        ask["owner"] = query["owner"]
    reply = await request.app[CLIENT].call("job.list", ask, timeout=CALL_WAIT)
    return json_response({"jobs": reply["jobs"], "total": reply["total"],
                          "limit": ask["limit"], "offset": ask["offset"]})


async def job(request: web.Request) -> web.StreamResponse:
    """A job's record and its input (``input_error`` says why when it cannot be shown)."""
    _name, owner = await acting(request)
    job_id = request.match_info["id"]
    client = request.app[CLIENT]
    record = (await job_call(client, "job.status", job_id, owner))["job"]
    body: dict[str, Any] = {"job": record}
    try:
        body["input"] = (await client.call("job.input", {"job": job_id, **_as(owner)},
                                           timeout=CALL_WAIT))["input"]
    except RemoteError as exc:      # not recorded (yet), or too large to show
        body["input_error"] = exc.message
    return json_response(_shown(body))


async def outputs(request: web.Request) -> web.StreamResponse:
    """A finished job's result: as JSON, with each binary value listed as an output."""
    _name, owner = await acting(request)
    job_id = request.match_info["id"]
    try:
        reply = await job_call(request.app[CLIENT], "job.result", job_id, owner)
    except RemoteError as exc:
        if exc.code == ErrorCode.NOT_READY:
            return json_response({"ready": False})
        if exc.code == ErrorCode.TOO_LARGE:
            return json_response({"ready": True, "too_large": True,
                                  "size": exc.details.get("size")})
        return json_response({"ready": True, "error": {"code": exc.code,
                                                       "message": exc.message}})
    found = [{"index": n, "name": path, "type": kind_of(data), "size": len(data)}
             for n, (path, data) in enumerate(binaries(reply["result"]))]
    return json_response({"ready": True, "result": _shown(reply["result"]), "outputs": found})


async def output(request: web.Request) -> web.StreamResponse:
    """One binary output, raw: an image inline, anything else as a download."""
    _name, owner = await acting(request)
    job_id = request.match_info["id"]
    reply = await job_call(request.app[CLIENT], "job.result", job_id, owner)
    index = _number(request.match_info, "n", 0, 0, 2**31)
    found = list(binaries(reply["result"]))
    if index >= len(found):
        raise ApiError(404, f"job {job_id} has no output {index}")
    path, data = found[index]
    kind = kind_of(data)
    disposition = "inline" if kind != OCTETS else "attachment"
    filename = "".join(c if c.isalnum() or c in "._-" else "_" for c in path)[-100:] or "output"
    return web.Response(body=data, content_type=kind, headers={
        "Content-Disposition": f'{disposition}; filename="{filename}"'})


def binaries(value: Any, path: str = "", depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """``(path, bytes)`` for every binary value within :data:`DEPTH` levels, in order."""
    if isinstance(value, bytes | bytearray):
        yield path or "result", bytes(value)
    elif depth < DEPTH and isinstance(value, dict):
        for key, item in value.items():
            yield from binaries(item, f"{path}/{key}" if path else str(key), depth + 1)
    elif depth < DEPTH and isinstance(value, list):
        for n, item in enumerate(value):
            yield from binaries(item, f"{path}/{n}" if path else str(n), depth + 1)


def kind_of(data: bytes) -> str:
    for magic, kind in IMAGES:
        if data.startswith(magic):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return OCTETS


def _shown(value: Any) -> Any:
    """``value`` for a JSON reply: binary values as a note of their size."""
    if isinstance(value, bytes | bytearray):
        return {"binary": len(value)}
    if isinstance(value, dict):
        return {str(key): _shown(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shown(item) for item in value]
    return value


# -- actions ----------------------------------------------------------------------------------


async def submit(request: web.Request) -> web.StreamResponse:
    """Start a job of ``pts`` with ``input``; the job is the user's."""
    name, _owner = await acting(request)
    body = await read_json_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("pts"), str):
        raise ApiError(400, "give 'pts' (a PTS name) and 'input'")
    ask = {"pts": body["pts"], "input": body.get("input"), "owner": name}
    reply = await request.app[CLIENT].call("submit", ask, timeout=CALL_WAIT)
    return json_response(reply, status=201)


async def cancel(request: web.Request) -> web.StreamResponse:
    _name, owner = await acting(request)
    reply = await job_call(request.app[CLIENT], "job.cancel", request.match_info["id"], owner)
    return json_response(reply)


async def delete(request: web.Request) -> web.StreamResponse:
    _name, owner = await acting(request)
    reply = await job_call(request.app[CLIENT], "job.delete", request.match_info["id"], owner)
    return json_response(reply)


def _number(source: Any, key: str, default: int, low: int, high: int) -> int:
    text = source.get(key)
    if text is None or text == "":
        return default
    if not str(text).isdigit() or not low <= int(text) <= high:
        raise ApiError(400, f"{key} must be a whole number from {low} to {high}")
    return int(text)


def _instant(source: Any, key: str) -> float:
    try:
        value = float(source[key])
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise ApiError(400, f"{key} must be a non-negative number of epoch seconds")
    return value


# -- Server-Sent Events -----------------------------------------------------------------------


async def events(request: web.Request) -> web.StreamResponse:
    """The job's events as text/event-stream: ``id`` = seq, ``event`` = kind, ``data`` = JSON
    (the /v1 event stream's, resuming after ``Last-Event-ID``)."""
    _name, owner = await acting(request)
    job_id = request.match_info["id"]
    after = _number(request.headers, "Last-Event-ID", 0, 0, 2**62)
    client = request.app[CLIENT]
    await job_call(client, "job.status", job_id, owner)    # a 404 before the stream starts
    return await stream_events(request, client, {"job": job_id, **_as(owner)}, after)
