"""The bare baselines' wire: one msgpack header frame ``[id, body]`` plus raw blob frames.

Owns the two bare clients the baselines are measured with — a blocking DEALER (one request at a
time) and an asyncio DEALER that drains every queued reply on each wake-up (batch draining,
as ``protocols.pump`` does) — the same shapes as PNS's ``Client`` and ``AsyncClient`` without
envelope, signing, ids of 32 hex chars or typed errors. Large payloads travel as their own frames,
sent with ``copy=False``. Imports only pyzmq and msgpack.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import msgpack
import zmq

HWM = 100_000


def dealer(context: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.connect(endpoint)
    return sock


def frames_of(msg_id: int, body: Any, blobs: Sequence[Any] = ()) -> list[Any]:
    return [msgpack.packb([msg_id, body], use_bin_type=True), *blobs]


class BareClient:
    """Blocking: send one request, wait for its reply."""

    def __init__(self, endpoint: str) -> None:
        self.context: zmq.Context[Any] = zmq.Context()
        self.socket = dealer(self.context, endpoint)
        self._ids = itertools.count()

    def call(self, body: Any, blobs: Sequence[bytes] = (), timeout: float = 30.0) -> Any:
        self.socket.send_multipart(frames_of(next(self._ids), body, blobs), copy=False)
        if not self.socket.poll(int(timeout * 1000)):
            raise TimeoutError("no reply from the bare server")
        frames = self.socket.recv_multipart(copy=False)
        _msg_id, reply = msgpack.unpackb(frames[0].bytes, raw=False)
        return reply, [f.buffer for f in frames[1:]]

    def close(self) -> None:
        self.socket.close(linger=0)
        self.context.term()


class BareAsyncClient:
    """asyncio: many requests in flight on one DEALER, replies matched by id."""

    def __init__(self, endpoint: str) -> None:
        self.context: zmq.Context[Any] = zmq.Context()
        self.socket = dealer(self.context, endpoint)
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._loop = asyncio.get_running_loop()
        self._scheduled = False
        self._loop.add_reader(self.socket.fileno(), self._drain)

    async def call(self, body: Any, blobs: Sequence[bytes] = (), timeout: float = 30.0) -> Any:
        msg_id = next(self._ids)
        future: asyncio.Future[Any] = self._loop.create_future()
        self._pending[msg_id] = future
        try:
            self.socket.send_multipart(frames_of(msg_id, body, blobs), copy=False)
            self._schedule()   # the send may have consumed the readability edge
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(msg_id, None)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        sock = self.socket
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            msg_id, reply = msgpack.unpackb(frames[0].bytes, raw=False)
            future = self._pending.get(msg_id)
            if future is not None and not future.done():
                future.set_result((reply, [f.buffer for f in frames[1:]]))

    def close(self) -> None:
        self._loop.remove_reader(self.socket.fileno())
        self.socket.close(linger=0)
        self.context.term()
