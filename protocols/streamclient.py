"""The asyncio client over the daemon's stream door: a Unix stream socket in place of ZeroMQ.

A daemon with an ``ipc://`` endpoint also listens on a Unix stream socket beside it
(``<path>.stream``, in the same owner-only directory; SPEC.md, "The stream door"). Its messages
are the same signed frames as on ``ipc://``, in the records of the stdio transport. A round
trip costs a fraction of ZeroMQ's (no I/O thread on either side), which is why pnsweb talks to
a local daemon this way (bench/FINDINGS.md, "The hop itself").

:class:`StreamClient` has :class:`protocols.client.AsyncClient`'s calls (``call``, ``stream``,
``run``, ``result``…; :class:`protocols.calls.AsyncCalls`) over one connection, made on first
use and again after it drops. A drop fails every call waiting on it at once with
``unavailable``; a daemon that is not there is retried for a moment (a restart), then reported
``unavailable``. A record over this client's limit (plus the lengths' slack) breaks the stream:
the calls waiting on it fail and the next call connects anew. asyncio only (there is no
blocking flavour). Python 3.8 compatible.
"""

from __future__ import annotations

import asyncio
from typing import List, Optional

from protocols.calls import AsyncCalls, lost_connection
from protocols.codec import DEFAULT_MAX_BYTES
from protocols.connection import DEFAULT_TIMEOUT, connect_waits, unavailable
from protocols.session import Session
from protocols.stdioframe import SLACK, FramingError
from protocols.streamlink import RecordLink, door_path

SCHEME = "unix://"


def stream_door(ipc_endpoint: str) -> str:
    """The stream door of the daemon serving ``ipc_endpoint`` (``ipc://P`` -> ``unix://P.stream``)."""
    return SCHEME + door_path(ipc_endpoint)


class _Link(RecordLink):
    """The client's connection: tells the client once when it ends, and why."""

    def __init__(self, client: "StreamClient") -> None:
        super().__init__(client.max_bytes + SLACK, client._deliver,
                         broken=self._on_broken, lost=self._on_lost)
        self._client = client
        self._ended = False

    def _on_broken(self, exc: FramingError) -> None:
        self._end("the daemon at %s sent a stream this client cannot read (%s); the connection "
                  "is closed" % (self._client.endpoint, exc))

    def _on_lost(self, exc: Optional[BaseException]) -> None:
        self._end(lost_connection(self._client.endpoint))

    def _end(self, why: str) -> None:
        if not self._ended:
            self._ended = True
            self._client._link_ended(self, why)


class StreamClient(AsyncCalls):
    """asyncio client of a daemon's stream door (``unix://PATH``)."""

    def __init__(self, endpoint: str, *, key: bytes = b"", timeout: float = DEFAULT_TIMEOUT,
                 max_bytes: int = DEFAULT_MAX_BYTES, skew: float = 60.0) -> None:
        if not endpoint.startswith(SCHEME):
            raise ValueError("a stream client needs a unix:// endpoint, not %r" % endpoint)
        self.endpoint = endpoint
        self.path = endpoint[len(SCHEME):]
        self.timeout = timeout
        # The door is as private as the ipc:// socket beside it: blob frames go unsigned
        # (their lengths signed), as there (SPEC.md, "Blob frames on ipc://").
        self._session = Session(key, max_bytes=max_bytes, skew=skew, local=True,
                                take_unsigned=True)
        self._link: Optional[_Link] = None
        self._connecting: Optional[asyncio.Task[_Link]] = None
        self._calls_init()

    def _prepare(self) -> None:
        """Nothing to check: a link that dropped is gone (``_link_ended``), and the send
        makes a new one."""

    def _send_now(self, frames: List[bytes]) -> bool:
        link = self._link
        if link is None or link.closed:
            return False
        link.send(frames)
        return True

    async def _send_when_connected(self, frames: List[bytes]) -> None:
        # One connection for every caller that finds none: the first starts it, the others
        # wait for the same one (shielded: a caller that gives up does not stop it).
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connected)
        link = await asyncio.shield(self._connecting)
        link.send(frames)

    async def _connect(self) -> _Link:
        """Connect, retrying for a moment while the daemon is not there (a restart)."""
        link = await self._try_connect()
        async for _ in connect_waits():
            if link is not None:
                break
            link = await self._try_connect()
        if link is None or self._closed:
            if link is not None:
                link.close()
            raise unavailable(self.endpoint)
        self._link = link
        return link

    async def _try_connect(self) -> Optional[_Link]:
        try:
            _transport, link = await asyncio.get_running_loop().create_unix_connection(
                lambda: _Link(self), self.path)
        except OSError:     # no socket file yet, or no one listening on it
            return None
        return link

    def _connected(self, task: "asyncio.Task[_Link]") -> None:
        self._connecting = None
        if not task.cancelled():
            task.exception()    # retrieved: every caller waiting on it raised it already

    def _link_ended(self, link: _Link, why: str) -> None:
        if link is self._link:
            self._link = None
            self._fail_waiting(why)

    def _shut(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._link is not None:
            self._link.close()
            self._link = None
