"""Results written to the HTTP client: one output's value, or a stored result streamed.

:func:`send_value` writes one output's value in memory as the body, with the output's media
type. The daemon answers ``too_large`` for a result over its message limit (``job.result`` at
once; a synchronous ``run`` once the job is recorded, naming the job), and an output served on
its own (``/v1/jobs/{id}/results/{name}``, where a reference points) is always read from the
store: :func:`stream_results` reads the job's stored result with ``job.result_chunk``, chunk by
chunk, and writes the same body the small-result path would send (the results document, or a
single output ``raw`` with its media type) with aiohttp's StreamResponse, never holding the
result in memory. Each output is read from the store on its own (a few chunks are skipped to
reach it), found by its ``path`` in the result.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web

from pnsweb import ogc
from pnsweb.keys import DaemonClient
from pnsweb.links import base_url
from pnsweb.ogcvalues import REFERENCE, VALUE, media_type, reference
from pnsweb.resultstream import MsgpackReader, write_raw, write_value
from pnsweb.views_v1_io import STREAM_THRESHOLD, send, send_json
from protocols.errors import PnsError
from protocols.results import chunk_end, chunk_request
from protocols.utf8 import utf8

log = structlog.get_logger(__name__)

CHUNK_TIMEOUT = 60.0      # seconds for one chunk from the daemon
FLUSH = 256 << 10         # bytes gathered before a write to the HTTP client
Head = tuple[str, Any]
Source = Callable[[], AsyncGenerator[bytes, None]]   # a fresh read of the stored result


class Relay:
    """The response being streamed: gathers small pieces into writes of :data:`FLUSH` bytes."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self._buffer = bytearray()

    async def __call__(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= FLUSH:
            await self.flush()

    async def flush(self) -> None:
        if self._buffer:
            data, self._buffer = bytes(self._buffer), bytearray()
            await self.response.write(data)


async def chunks(client: DaemonClient, job_id: str,
                 owner: str | None) -> AsyncGenerator[bytes, None]:
    """The job's stored result (msgpack), a chunk per daemon call, read as ``owner`` (None: an
    administrator)."""
    offset, done = 0, False
    as_owner = {} if owner is None else {"owner": owner}
    while not done:
        reply = await client.call("job.result_chunk", chunk_request(job_id, offset) | as_owner,
                                  timeout=CHUNK_TIMEOUT)
        data, offset, done = chunk_end(reply, offset)
        if data:
            yield data


async def output_head(reader: MsgpackReader, port: ogc.Port) -> Head | None:
    """Position ``reader`` at output ``port``'s value (its ``path`` into the result)."""
    head: Head | None = await reader.head()
    for key in port.path:
        head = await reader.find(key, head)
        if head is None:
            return None
    return head


def results_href(base: str, job_id: str) -> Callable[[str], str]:
    """Output name -> the URL its value is served at on its own."""
    return lambda name: f"{base}/jobs/{job_id}/results/{name}"


async def send_value(request: web.Request, port: ogc.Port, value: Any, *,
                     headers: Mapping[str, str] | None = None) -> web.StreamResponse:
    """One output's value as the whole body, with its media type (JSON unless bytes or text
    the output declares)."""
    kind = media_type(port, value)
    if kind == ogc.JSON:
        return await send_json(request, value, headers=headers)
    if isinstance(value, bytes):
        body: bytes | memoryview = value
    else:
        text = str(value)
        # a large ASCII text is sent from the string's own bytes, not from a copy
        body = utf8(text) if len(text) > STREAM_THRESHOLD else text.encode()
    return await send(request, body, content_type=kind, headers=headers)


async def stream_results(
    request: web.Request, client: DaemonClient, job_id: str, model: ogc.ProcessModel, *,
    owner: str | None, chosen: Mapping[str, str] | None = None, raw: bool = False,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Answer with the stored result of ``job_id``, read as ``owner`` (None: an administrator):
    the results document of the ``chosen`` outputs (output id -> transmission mode; all by
    value when None), or with ``raw`` and one output, that output's value itself."""
    chosen = chosen if chosen is not None else dict.fromkeys(model.output_ids(), VALUE)
    source = functools.partial(chunks, client, job_id, owner)
    response = web.StreamResponse(headers=headers)
    relay = Relay(response)
    try:
        if raw and len(chosen) == 1:
            [key] = chosen
            await _raw(request, source, port=model.output_ports[key], out=relay)
        else:
            response.content_type = ogc.JSON
            await response.prepare(request)
            href = results_href(base_url(request) + "/v1", job_id)
            await _document(source, model, chosen, relay, href)
        await relay.flush()
    except PnsError as exc:
        if not response.prepared:
            raise
        # the status is sent: only a cut-off body can tell the client that it is incomplete
        log.warning("result_stream_failed", job=job_id, error=str(exc))
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def _document(source: Source, model: ogc.ProcessModel, chosen: Mapping[str, str],
                    out: Relay, href: Callable[[str], str]) -> None:
    await out(b"{")
    for index, (key, mode) in enumerate(chosen.items()):
        port = model.output_ports[key]
        await out((b", " if index else b"") + json.dumps(key).encode() + b": ")
        if mode == REFERENCE:
            await out(json.dumps(reference(port, href(key))).encode())
            continue
        async with contextlib.aclosing(source()) as chunked:
            reader = MsgpackReader(chunked)
            head = await output_head(reader, port)
            if head is None:
                await out(b"null")
            else:
                await write_value(reader, head, out, qualified=True,
                                  media_type=port.media_type)
    await out(b"}")


async def _raw(request: web.Request, source: Source, *, port: ogc.Port, out: Relay) -> None:
    async with contextlib.aclosing(source()) as chunked:
        reader = MsgpackReader(chunked)
        head = await output_head(reader, port)
        response = out.response
        kind = head[0] if head is not None else None
        # the media type of a value of this kind (an empty one stands for it: none is read)
        response.content_type = media_type(port, b"" if kind == "bin" else
                                           "" if kind == "str" else None)
        await response.prepare(request)
        if head is None:
            await out(b"null")
        elif head[0] in ("bin", "str") and response.content_type != ogc.JSON:
            await write_raw(reader, head[1], out)
        else:
            await write_value(reader, head, out)
