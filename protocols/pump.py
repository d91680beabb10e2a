"""Driving a ZeroMQ socket from an asyncio loop, correctly and fast.

A ZeroMQ socket's file descriptor is edge-triggered: it signals only that the socket's events
*changed*, and any operation on the socket (a send too) may consume that signal. Mixing
awaited receives with direct sends therefore loses wake-ups and strands replies. A
:class:`Pump` owns its socket: it watches the descriptor, and on every wake-up (and soon after
a send that finds messages waiting) it drains the messages already queued (non-blocking
receives until empty, at most BATCH per turn of the loop, so that a flood cannot hold the loop),
which under load is also much faster than awaiting each message: one wake-up serves many
(bench/FINDINGS.md, "Micro-measurements").
Python 3.8 compatible; imports nothing of ours.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, List, Optional

import zmq

Receiver = Callable[[List[bytes]], None]
# Plain ints: pyzmq builds an enum object for every flag combination and option read, a
# measurable cost at tens of thousands of messages a second.
_NOBLOCK = int(zmq.NOBLOCK)
_MORE = int(zmq.SNDMORE) | _NOBLOCK
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_COPY_BELOW = 64 * 1024   # smaller frames are copied (cheaper than tracking a zero-copy send)
# The compiled send and receive, bound once: zmq.Socket.send is a Python wrapper around this
# send (for the draft sockets' routing_id and group), a Python call per frame otherwise. For
# plain sockets only (a zmq.asyncio socket's own send and recv would be bypassed).
_send = zmq.backend.Socket.send
_recv = zmq.backend.Socket.recv
# The option read, typed for the one int option read here (ZMQ_EVENTS): no typing.cast call
_get: Callable[[Any, int], int] = zmq.backend.Socket.get  # type: ignore[assignment]
# Messages received per turn of the event loop: a peer that floods the socket must not keep the
# loop from the replies, timers and other sockets waiting behind the drain.
BATCH = 256


def send_frames(socket: "zmq.Socket[Any]", frames: List[Any]) -> None:
    """Queue one message without blocking; raise ``zmq.Again`` if it cannot be queued.

    Frame by frame with plain int flags: ``send_multipart`` costs several times as much for
    small messages. ZeroMQ delivers a message whole or not at all: once its first frame is
    queued, the others are too.
    """
    last = len(frames) - 1
    for index, frame in enumerate(frames):
        _send(socket, frame, _NOBLOCK if index == last else _MORE, len(frame) < _COPY_BELOW)


def recv_frames(socket: "zmq.Socket[Any]") -> List[Any]:
    """Receive one message without blocking; raise ``zmq.Again`` if none is queued.

    Frame by frame with ``Frame.more``: ``recv_multipart`` reads an option per frame, and pyzmq
    builds an enum for each read. A frame of at least 64 KiB is a ``memoryview`` of the
    ZeroMQ message itself (not copied: the codec decides whether its receiver needs ``bytes``);
    smaller ones are ``bytes``.
    """
    frames: List[Any] = []
    more = True
    while more:
        frame = _recv(socket, _NOBLOCK, False)
        # len() of the frame itself: a small frame never builds the memoryview it would not keep
        frames.append(frame.bytes if len(frame) < _COPY_BELOW else frame.buffer)
        more = frame.more
    return frames


class Pump:
    """Feeds every message of ``socket`` to ``receive``; sends without blocking."""

    def __init__(
        self,
        socket: "zmq.Socket[Any]",
        receive: Receiver,
        loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> None:
        self.socket = socket
        self._receive = receive
        self._loop = loop or asyncio.get_running_loop()
        self._scheduled = False
        self._closed = False
        self._fd = socket.fileno()
        self._loop.add_reader(self._fd, self._drain)
        self._schedule()  # messages may have arrived before the reader was added

    def send(self, frames: List[Any]) -> None:
        """Queue a message now; raise ``zmq.Again`` if it cannot be queued (no peer, HWM)."""
        socket = self.socket
        last = len(frames) - 1
        for index, frame in enumerate(frames):    # send_frames inline: a call less a message
            _send(socket, frame, _NOBLOCK if index == last else _MORE, len(frame) < _COPY_BELOW)
        # The send may have consumed a readability edge: if messages wait, drain them soon
        # (not here: a handler that sends must not find itself called again inside the send).
        if not self._scheduled and _get(socket, _EVENTS) & _POLLIN:
            self._schedule()

    @property
    def closed(self) -> bool:
        return self._closed

    def _schedule(self) -> None:
        if not self._scheduled and not self._closed:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = False
        socket, receive = self.socket, self._receive
        for _ in range(BATCH):
            if self._closed or not _get(socket, _EVENTS) & _POLLIN:
                return
            frames: List[Any] = []     # recv_frames inline: a call less a message
            more = True
            try:
                while more:
                    frame = _recv(socket, _NOBLOCK, False)
                    frames.append(frame.bytes if len(frame) < _COPY_BELOW else frame.buffer)
                    more = frame.more
            except zmq.Again:
                return
            receive(frames)
        self._schedule()    # more may wait: the rest after the loop's other callbacks

    def close(self, linger: int = 0) -> None:
        """Stop watching and close the socket; outgoing messages still queued get ``linger``
        milliseconds to leave (by default none: they are dropped)."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self.socket.close(linger=linger)
