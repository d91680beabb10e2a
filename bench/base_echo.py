"""Baseline 1: a bare asyncio ZeroMQ ROUTER echo with batch draining (as ``protocols.pump``).

``python -m bench.base_echo ENDPOINT``. Each request ``[identity, header, blob...]`` is decoded
(msgpack), re-encoded and answered inline, with blob frames sent back zero-copy. No envelope,
signing, tasks or records: the floor a one-hop PNS daemon is compared with.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import msgpack
import zmq

from bench.bare_wire import HWM


class Drainer:
    """Calls ``handle`` for every message queued on ``sock`` whenever it may be readable."""

    def __init__(self, sock: zmq.Socket[Any], handle: Any) -> None:
        self.sock = sock
        self.handle = handle
        self.loop = asyncio.get_running_loop()
        self.scheduled = False
        self.loop.add_reader(sock.fileno(), self.drain)
        self.schedule()

    def schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.drain)

    def drain(self) -> None:
        self.scheduled = False
        sock = self.sock
        while sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self.handle(frames)

    def send(self, frames: list[Any]) -> None:
        self.sock.send_multipart(frames, copy=False)
        self.schedule()


def router(context: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    sock = context.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, HWM)
    sock.setsockopt(zmq.RCVHWM, HWM)
    sock.bind(endpoint)
    return sock


async def until_signalled() -> None:
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await stop.wait()


async def serve(endpoint: str) -> None:
    context: zmq.Context[Any] = zmq.Context()
    sock = router(context, endpoint)

    def handle(frames: list[Any]) -> None:
        msg_id, body = msgpack.unpackb(frames[1].bytes, raw=False)
        reply = msgpack.packb([msg_id, body], use_bin_type=True)
        drainer.send([frames[0], reply, *frames[2:]])

    drainer = Drainer(sock, handle)
    try:
        await until_signalled()
    finally:
        sock.close(linger=0)
        context.term()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
