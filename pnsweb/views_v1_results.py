"""Results too large for one daemon message, streamed from the store to the HTTP client.

The daemon answers ``too_large`` for a result over its message limit (``job.result`` at once;
a synchronous ``run`` once the job is recorded, naming the job). The views then call
:func:`stream_results`: it reads the job's stored result with ``job.result_chunk``, chunk by
chunk, and writes the same body the small-result path would send (the results document, or a
single output ``raw``) with aiohttp's StreamResponse, never holding the result in memory.
Each output is read from the store on its own (a few chunks are skipped to reach it).
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
from pnsweb.resultstream import MsgpackReader, write_raw, write_value
from protocols.errors import PnsError
from protocols.results import chunk_end, chunk_request

log = structlog.get_logger(__name__)

CHUNK_TIMEOUT = 60.0      # seconds for one chunk from the daemon
FLUSH = 256 << 10         # bytes gathered before a write to the HTTP client
OCTETS = "application/octet-stream"
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


async def output_head(reader: MsgpackReader, model: ogc.ProcessModel, port: str) -> Head | None:
    """Position ``reader`` at output ``port``'s value (as :func:`outputs_of` picks it)."""
    if model.mode != "process":
        return await reader.head()
    files = await reader.find("outputs")
    if files is None or files[0] != "map":
        return None
    if model.outputs == (ogc.ALL_FILES,):
        return files
    return await reader.find(port, files)


def _absent(model: ogc.ProcessModel) -> bytes:
    return b"{}" if model.outputs == (ogc.ALL_FILES,) else b"null"


async def stream_results(
    request: web.Request, client: DaemonClient, job_id: str, model: ogc.ProcessModel, *,
    owner: str | None, requested: Any = None, raw: bool = False,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Answer with the stored result of ``job_id``, read as ``owner`` (None: an administrator):
    the results document of the ``requested`` outputs (all when None), or with ``raw`` and one
    output, that output's value itself."""
    ports = [p.id for p in model.outputs if requested is None or p.id in requested]
    source = functools.partial(chunks, client, job_id, owner)
    response = web.StreamResponse(headers=headers)
    relay = Relay(response)
    try:
        if raw and len(ports) == 1:
            await _raw(request, source, model=model, port=ports[0], out=relay)
        else:
            response.content_type = ogc.JSON
            await response.prepare(request)
            await _document(source, model, ports, relay)
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


async def _document(source: Source, model: ogc.ProcessModel, ports: list[str],
                    out: Relay) -> None:
    await out(b"{")
    for index, port in enumerate(ports):
        await out((b", " if index else b"") + json.dumps(port).encode() + b": ")
        async with contextlib.aclosing(source()) as chunked:
            reader = MsgpackReader(chunked)
            head = await output_head(reader, model, port)
            if head is None:
                await out(_absent(model))
            else:
                await write_value(reader, head, out, qualified=True)
    await out(b"}")


async def _raw(request: web.Request, source: Source, *,
               model: ogc.ProcessModel, port: str, out: Relay) -> None:
    async with contextlib.aclosing(source()) as chunked:
        reader = MsgpackReader(chunked)
        head = await output_head(reader, model, port)
        response = out.response
        response.content_type = OCTETS if head is not None and head[0] == "bin" else ogc.JSON
        await response.prepare(request)
        if head is None:
            await out(_absent(model))
        elif head[0] == "bin":
            await write_raw(reader, head[1], out)
        else:
            await write_value(reader, head, out)
