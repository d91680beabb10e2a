"""Baseline 7: the bare echo over a Unix stream socket instead of ZeroMQ, and its client.

``python -m bench.base_stream PATH`` listens on the Unix socket PATH. A request is one record
laid out as in PNS's stream framing (:mod:`protocols.stdioframe`, the stdio worker transport:
the record's length, then each frame's length and bytes) holding the bare wire's frames, a
msgpack header ``[id, body]`` and raw blobs, answered inline like :mod:`bench.base_echo`
answers them over ZeroMQ. :class:`BareStreamClient` is :class:`bench.bare_wire.BareAsyncClient`'s
shape on such a socket. Together with :mod:`bench.base_web` they measure what the hop between
an aiohttp front-end and its back end costs as a plain stream, with no ZeroMQ I/O thread on
either side (the web area's "unix stream hop" rows).
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Callable, Sequence
from typing import Any, cast

import msgpack

from bench.bare_wire import frames_of
from protocols.stdioframe import LENGTH, pack, split_frames


class _Link(asyncio.Protocol):
    """One connection's records in (each handed to ``handle``) and out."""

    def __init__(self, handle: Callable[[_Link, list[bytes]], None]) -> None:
        self.handle = handle
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        buffer, start = self.buffer, 0
        while len(buffer) - start >= LENGTH.size:
            end = start + LENGTH.size + LENGTH.unpack_from(buffer, start)[0]
            if len(buffer) < end:
                break
            with memoryview(buffer) as view:
                frames = split_frames(view[start + LENGTH.size:end])
            start = end
            self.handle(self, frames)
        del buffer[:start]

    def send(self, frames: Sequence[bytes]) -> None:
        assert self.transport is not None
        self.transport.writelines(pack(frames))


def _echo(link: _Link, frames: list[bytes]) -> None:
    msg_id, body = msgpack.unpackb(frames[0], raw=False)
    link.send([msgpack.packb([msg_id, body], use_bin_type=True), *frames[1:]])


class BareStreamClient:
    """asyncio: many requests in flight on one Unix stream, replies matched by id."""

    def __init__(self) -> None:
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._link: _Link | None = None

    @classmethod
    async def connect(cls, path: str) -> BareStreamClient:
        client = cls()
        _transport, client._link = await asyncio.get_running_loop().create_unix_connection(
            lambda: _Link(client._deliver), path)
        return client

    async def call(self, body: Any, blobs: Sequence[bytes] = (), timeout: float = 30.0) -> Any:
        assert self._link is not None
        msg_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            self._link.send(frames_of(msg_id, body, blobs))
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(msg_id, None)

    def _deliver(self, _link: _Link, frames: list[bytes]) -> None:
        msg_id, reply = msgpack.unpackb(frames[0], raw=False)
        future = self._pending.get(msg_id)
        if future is not None and not future.done():
            future.set_result((reply, frames[1:]))

    def close(self) -> None:
        if self._link is not None and self._link.transport is not None:
            self._link.transport.close()


async def serve(path: str) -> None:
    from bench.base_echo import until_signalled  # noqa: PLC0415 - keeps the header short

    server = await asyncio.get_running_loop().create_unix_server(lambda: _Link(_echo), path)
    try:
        await until_signalled()
    finally:
        server.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
