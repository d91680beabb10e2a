"""A client's link to the daemon: the DEALER, its monitor and the session that encodes for it.

Owns the socket options (no queueing for a daemon that is not connected, high-water marks,
no ``ZMQ_MAXMSGSIZE``), CURVE on ``tcp://``, the monitor that sees the connection drop or a
CURVE handshake fail, a new socket after a drop (so that no request is queued on the dead
connection), and the error a caller gets for a daemon it cannot reach. What both
flavours of :mod:`protocols.client` share; it must not send requests or wait for replies
(the flavours do). Python 3.8 compatible.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any, AsyncIterator, Callable, List, Optional, Tuple, cast

import zmq
from zmq.utils.monitor import parse_monitor_message

from protocols.calls import lost_connection
from protocols.codec import DEFAULT_MAX_BYTES
from protocols.errors import ErrorCode, RemoteError
from protocols.membership import secure_client
from protocols.session import Session as _Session

DEFAULT_TIMEOUT = 30.0
CONNECT_WAIT = 2.0    # how long a send waits for the connection before "unavailable"
_EVENTS = int(zmq.EVENTS)     # plain ints: pyzmq makes an enum of each flag it is given
_POLLIN = int(zmq.POLLIN)
_MONITORS = itertools.count()   # names of monitor endpoints, unique in the process
_HANDSHAKE_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


class Connection:
    """A DEALER connected to the daemon plus the session that encodes for it."""

    def __init__(
        self,
        endpoint: str,
        *,
        key: bytes = b"",
        timeout: float = DEFAULT_TIMEOUT,
        max_bytes: int = DEFAULT_MAX_BYTES,
        skew: float = 60.0,
        context: "Optional[zmq.Context[Any]]" = None,
        curve: Optional[Tuple[bytes, bytes, bytes]] = None,
        local: Optional[bool] = None,
    ) -> None:
        self.endpoint = endpoint
        self.handshake = ""     # why the last CURVE handshake failed, if it did
        self.timeout = timeout
        # Blob frames go unsigned (lengths signed) on ipc://, and are taken so; a daemon that
        # also serves TCP takes signed ones only: say local=False (SPEC.md, "Blob frames").
        ipc = endpoint.startswith("ipc://")
        self._session = _Session(key, max_bytes=max_bytes, skew=skew,
                                 local=ipc if local is None else local, take_unsigned=ipc)
        self._own_context = context is None
        self._context: zmq.Context[Any] = context or zmq.Context()
        self._curve = curve
        self._socket, self._monitor = self._open()
        self._dropped = False   # a drop was reported: the next send goes on a new socket
        self._setup()

    def _open(self) -> "Tuple[zmq.Socket[bytes], zmq.Socket[bytes]]":
        """A DEALER connected to the daemon, and the monitor that sees its connection drop."""
        socket: zmq.Socket[bytes] = self._context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        # Queue nothing for a daemon that is not connected: a send fails at once instead, and
        # the caller learns the daemon is unavailable rather than waiting out its timeout.
        socket.setsockopt(zmq.IMMEDIATE, 1)
        socket.setsockopt(zmq.SNDHWM, 100_000)
        socket.setsockopt(zmq.RCVHWM, 100_000)
        events = zmq.EVENT_DISCONNECTED
        if self._curve is not None:
            secure_client(socket, self._curve)
            events |= _HANDSHAKE_FAILED
        # Made before connecting, so that no drop of the connection goes unseen; named here,
        # as a socket that replaces a closed one may get its descriptor, which pyzmq's default
        # name is made of, before libzmq's reaper has freed the old name.
        monitor: zmq.Socket[bytes] = socket.get_monitor_socket(
            events, addr="inproc://pns-monitor-%d-%d" % (os.getpid(), next(_MONITORS)))
        socket.connect(self.endpoint)
        return socket, monitor

    @property
    def max_bytes(self) -> int:
        """The message limit this client keeps to."""
        return self._session.codec.max_bytes

    def _setup(self) -> None:
        """The flavour's own state."""

    def _lost(self, frames: List[bytes]) -> Optional[str]:
        """For a monitor message saying the connection dropped: why, for the callers."""
        try:
            event = parse_monitor_message(frames)["event"]
        except (ValueError, IndexError, KeyError):   # not a monitor event: nothing dropped
            return None
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self.handshake = "the daemon refused this client's CURVE key"
        elif event & _HANDSHAKE_FAILED:
            self.handshake = "CURVE handshake failed (is the server key the daemon's?)"
        if event != zmq.EVENT_DISCONNECTED:
            return None
        self._dropped = True
        return lost_connection(self.endpoint)

    def _renew(self) -> bool:
        """After a drop, a new DEALER and monitor in place of the old (True if renewed).

        libzmq tells the socket that its connection is gone by a command sent after the
        monitor's event: a request sent on the old socket between the two could be queued on the
        dead connection and never answered. A new socket has no such connection; it connects
        afresh (and, as the old one would, sends nothing until it is connected).
        """
        if not self._dropped:
            return False
        self._dropped = False
        self._close_sockets()
        self._socket, self._monitor = self._open()
        return True

    def _close_sockets(self) -> None:
        """Close the DEALER and its monitor (the flavour may own them through pumps)."""
        self._monitor.close(linger=0)
        self._socket.close(linger=0)

    def _read_events(self, handle: Callable[[List[bytes]], None]) -> None:
        """Hand each event the monitor holds to ``handle``, without waiting.

        Asked first whether one waits: the usual answer, none, then costs a third of a receive
        that fails, which a pnsweb serving one connection paid on every request
        (bench/FINDINGS.md, "/v1 at one connection, second pass")."""
        while cast(int, self._monitor.getsockopt(_EVENTS)) & _POLLIN:
            try:
                frames = self._monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            handle(frames)

    def _release(self) -> None:
        if self._own_context:
            self._context.term()


async def connect_waits() -> AsyncIterator[None]:
    """Pauses of growing length (1 ms, doubling up to 50 ms), for as long as a client waits
    for the daemon to be reachable (:data:`CONNECT_WAIT`): a client tries again after each."""
    deadline = time.monotonic() + CONNECT_WAIT
    delay = 0.001
    while time.monotonic() < deadline:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
        yield


def unavailable(endpoint: str, handshake: str = "") -> RemoteError:
    """The error of a call that could not reach the daemon (``auth`` after a refused
    CURVE handshake)."""
    if handshake:
        return RemoteError(ErrorCode.AUTH, "daemon at %s: %s" % (endpoint, handshake))
    return RemoteError(ErrorCode.UNAVAILABLE, "daemon at %s is not reachable" % endpoint)
