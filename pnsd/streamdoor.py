"""The daemon's stream door: the client operations on a Unix stream socket beside ``ipc://``.

A daemon whose endpoint is ``ipc://P`` also listens on ``P.stream``, in the same owner-only
directory, for the same messages (signed frames, blob frames unsigned as on ``ipc://``) in the
records of the stdio transport (SPEC.md, "The stream door"). pnsweb talks to a local daemon this
way: a round trip costs a fraction of ZeroMQ's (bench/FINDINGS.md, "The hop itself"). Each
connection is a peer of the :class:`pnsd.server.Server` that serves the ``ipc://`` endpoint:
the same handlers, codec, refusal budgets and drain.

Owns the listening socket and its connections. A connection whose stream breaks the record
layout (a record over the limit, not a PNS message, frames that do not fill it) is refused
(counted and logged as ``message_refused``, as on ZeroMQ) and closed: a stream cannot be
resynchronised. A peer that stops reading while replies pile up past :data:`UNREAD_FACTOR`
message limits loses the replies over it (``reply_dropped``), as a ZeroMQ peer past its
high-water mark does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from pnsd.errors import ConfigError
from pnsd.server import Server
from protocols.stdioframe import SLACK, FramingError
from protocols.streamlink import RecordLink

log = structlog.get_logger(__name__)

BROKEN = "stream_broken"   # the refusals' reason for a connection whose stream broke
UNREAD_FACTOR = 16      # replies a peer has not read, in message limits, before more are dropped
_UNIX_PATH_MAX = 107    # sun_path's 108 bytes, less the terminating NUL


class _Connection(RecordLink):
    """One client's connection: a :data:`pnsd.server.Peer` of the server."""

    def __init__(self, door: StreamDoor) -> None:
        server = door.server
        super().__init__(server.codec.max_bytes + SLACK, self._receive,
                         broken=self._refused, lost=self._gone)
        self._door = door
        self._server = server
        self._unread = UNREAD_FACTOR * server.codec.max_bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._door.connections.add(self)

    def _receive(self, frames: list[Any]) -> None:
        self._server.receive(self, frames)

    def send(self, frames: Sequence[Any]) -> None:
        if self.buffered() > self._unread:
            log.warning("reply_dropped", reason="peer not reading", door="stream",
                        unread=self.buffered())
            return
        super().send(frames)

    def _refused(self, exc: FramingError) -> None:
        self._server.refusals.count(BROKEN, str(exc), door="stream")

    def _gone(self, exc: BaseException | None) -> None:
        self._door.connections.discard(self)
        if self.reader.pending():
            log.info("stream_cut", door="stream", pending=self.reader.pending(),
                     hint="the peer closed its connection inside a record")


class StreamDoor:
    """Listens on ``path`` for :class:`_Connection` s to ``server``."""

    def __init__(self, server: Server, path: Path) -> None:
        if len(str(path).encode()) > _UNIX_PATH_MAX:
            raise ConfigError(f"the stream door's path {path} is longer than a Unix socket "
                              f"path may be ({_UNIX_PATH_MAX} bytes): choose a shorter "
                              "ipc:// endpoint")
        self.server = server
        self.path = path
        self.connections: set[_Connection] = set()
        self._listener: asyncio.AbstractServer | None = None

    async def open(self) -> None:
        """Listen (a socket file left by a daemon that died is replaced: the pidfile's lock
        proved nobody owns it)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        loop = asyncio.get_running_loop()
        try:
            self._listener = await loop.create_unix_server(lambda: _Connection(self),
                                                           str(self.path))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.path}: {exc.strerror}") from exc
        log.info("stream_door_listening", path=str(self.path))

    def stop(self) -> None:
        """Take no new connection. Those open are still read: the server answers what comes
        on them while the daemon stops (:mod:`pnsd.server`, "Stopping")."""
        if self._listener is not None:
            self._listener.close()

    def close(self) -> None:
        """Stop listening, close every connection (after what is written to it has gone out)
        and remove the socket file."""
        if self._listener is not None:
            self._listener.close()
        for connection in list(self.connections):
            connection.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
