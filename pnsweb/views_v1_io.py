"""What the /v1 views share: the process catalogue, request bodies and replies.

Owns :class:`Catalog` (PTS name -> :class:`pnsweb.ogc.ProcessModel`, fetched with
``pts.describe`` and kept for a few seconds so that a synchronous execution costs one daemon
round trip, not two), reading a JSON request body (through :mod:`pnsweb.bodies`), and writing
JSON or bytes (streamed in chunks above :data:`STREAM_THRESHOLD`; JSON that holds large strings
or bytes with chunked transfer, a piece at a time: :mod:`pnsweb.jsonstream`). The values
themselves are translated by :mod:`pnsweb.ogcvalues`. No routes here.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import hdrs, web

from pnsweb import jsonstream, ogc
from pnsweb.bodies import EMPTY, read_json_body
from pnsweb.errors import ApiError
from pnsweb.keys import DaemonClient
from pnsweb.links import base_url
from pnsweb.views_v06_envelope import NotJson
from protocols.errors import ErrorCode, RemoteError

META_TIMEOUT = 10.0          # seconds for the daemon's quick metadata calls
MODEL_TTL = 2.0              # a hot swap shows in descriptions and mappings within this
MAX_MODELS = 1024
STREAM_THRESHOLD = 1 << 20   # bodies larger than this are written in chunks, with backpressure
CHUNK = 256 << 10
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
JOB_ID_RE = re.compile(r"[0-9a-f]{32}")


class Catalog:
    """PTS name -> process model, cached for :data:`MODEL_TTL` seconds."""

    def __init__(self, *, ttl: float = MODEL_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._models: dict[str, tuple[float, ogc.ProcessModel]] = {}

    async def model(self, client: DaemonClient, name: str) -> ogc.ProcessModel:
        """The model of PTS ``name``; raise the OGC no-such-process problem if it is unknown."""
        now = self._clock()
        hit = self._models.get(name)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        if not NAME_RE.fullmatch(name):
            raise ogc.no_such_process(name)
        try:
            reply = await client.call("pts.describe", {"name": name}, timeout=META_TIMEOUT)
        except RemoteError as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                self._models.pop(name, None)
                raise ogc.no_such_process(name) from exc
            raise
        model = ogc.model_of(reply)
        if len(self._models) >= MAX_MODELS:
            self._models.clear()
        self._models[name] = (now, model)
        return model




def job_id_of(request: web.Request) -> str:
    """The ``jobId`` path parameter; a malformed id is a job that does not exist."""
    job_id = request.match_info["jobId"]
    if not JOB_ID_RE.fullmatch(job_id):
        raise ogc.no_such_job(job_id)
    return job_id


def base_of(request: web.Request) -> str:
    """The absolute URL of ``/v1``: the public URL if one is set, else as this request reached
    it (:func:`pnsweb.links.base_url`)."""
    return base_url(request) + "/v1"


# -- bodies -----------------------------------------------------------------------------------

def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# made once: json.dumps with options builds a new encoder on every call
_ENCODER = json.JSONEncoder(default=_json_default, ensure_ascii=False, allow_nan=False)


def encode_json(value: Any) -> bytes:
    """UTF-8 JSON; :class:`NotJson` for NaN, Infinity or a lone surrogate (not JSON, not
    UTF-8)."""
    try:
        return _ENCODER.encode(value).encode()
    except ValueError as exc:     # UnicodeEncodeError is one too
        raise NotJson(str(exc)) from None


async def read_json(request: web.Request, *, limit: int) -> Any:
    """The request body as JSON, under ``limit`` bytes and the checks of :mod:`pnsweb.bodies`."""
    declared = request.headers.get(hdrs.CONTENT_TYPE)
    # the usual exact value spares parsing the header (parameters, case) on every request
    if declared is not None and declared != ogc.JSON and not _is_json(request.content_type):
        raise ApiError(415, "the body must be application/json")
    value = await read_json_body(request, limit=limit)
    if value is EMPTY:
        raise ogc.bad_request("the request needs a JSON body")
    return value


def _is_json(content_type: str) -> bool:
    return content_type == ogc.JSON or content_type.endswith("+json")


async def send(
    request: web.Request, payload: bytes | memoryview, *, content_type: str = ogc.JSON,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Answer with ``payload``; above :data:`STREAM_THRESHOLD` in chunks, each awaiting drain."""
    if len(payload) <= STREAM_THRESHOLD:
        return web.Response(body=payload, status=status, content_type=content_type,
                            headers=headers)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = content_type
    response.content_length = len(payload)
    await response.prepare(request)
    view = memoryview(payload)
    for start in range(0, len(payload), CHUNK):
        await response.write(view[start:start + CHUNK])
    await response.write_eof()
    return response


async def send_json(
    request: web.Request, value: Any, *, status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Answer with ``value`` as JSON; one that holds large strings or bytes is written a piece
    at a time with chunked transfer (:mod:`pnsweb.jsonstream`), never held whole."""
    try:
        parts = jsonstream.plan(value, _ENCODER, base64_bytes=True)
    except ValueError as exc:     # UnicodeEncodeError is one too
        raise NotJson(str(exc)) from None
    if parts is None:
        return await send(request, encode_json(value), status=status, headers=headers)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_type = ogc.JSON
    await response.prepare(request)
    await jsonstream.write(parts, response.write, _ENCODER)
    await response.write_eof()
    return response
