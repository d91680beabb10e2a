"""What the pnsweb processes of one port share, and the link between each and their parent.

When pnsweb serves from several processes (``workers = N``, :mod:`pnsweb.prefork`), the parent
runs a hub (:mod:`pnsweb.hub`) on a unix socket in a private (0700) directory and each child
keeps one :class:`Link` to it. What must hold across the children goes through that link:

- **Login back-off and console sessions** are replicated: a child that records a failed or
  successful login, or opens or closes a console session, applies it to its own copy and
  :meth:`Link.tell` s the hub, which applies it to its copy and to every other child's, and
  answers only once they all have. The HTTP reply waits for that answer, so the client's next
  request finds the same state on whichever child the kernel hands it (a new or restarted child
  starts from the hub's copy). Sessions travel as the MAC of their token (the key is shared by
  the hub), never the token.
- **Request metrics** are gathered at scrape time: :meth:`Link.metrics` asks the hub, which asks
  every child for its counters and adds them up (with the last counters of children that have
  died), so ``/metrics`` shows the port's requests, not one process's.

Owns the wire between hub and children (length-prefixed JSON frames over a stream), the child's
end of it, and the settings' plain-data form the hub hands each child. Must not call the
daemon, and must not be used by a single-process pnsweb (no link there: every app key it would
share is already the only one).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import struct
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import structlog
from aiohttp import web

from pnsweb.keys import PEERS
from pnsweb.settings import User, WebSettings

HEADER = struct.Struct("!I")
MAX_FRAME = 64 * 2**20        # a metrics snapshot of many routes stays far below
CALL_TIMEOUT = 5.0            # seconds the hub may take to answer (every child acked)
log = structlog.get_logger(__name__)

Message = dict[str, Any]
Apply = Callable[[Message], None]            # an event another child told
Snapshot = Callable[[], Any]                 # this child's request counters


class LinkClosed(Exception):
    """The other end of a hub link went away."""


async def read_frame(reader: asyncio.StreamReader) -> Message:
    try:
        size, = HEADER.unpack(await reader.readexactly(HEADER.size))
        if size > MAX_FRAME:
            raise LinkClosed(f"a frame of {size} bytes is over the limit")
        message = json.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise LinkClosed("the other end closed the link") from exc
    if not isinstance(message, dict):
        raise LinkClosed("a frame that is not a JSON object")
    return message


def write_frame(writer: asyncio.StreamWriter, message: Message) -> None:
    data = json.dumps(message, separators=(",", ":")).encode()
    writer.write(HEADER.pack(len(data)) + data)


def settings_to_wire(settings: WebSettings) -> Message:
    wire = asdict(settings)
    wire["key"] = settings.key.hex()
    wire["users"] = [[u.name, u.password_hash, u.admin] for u in settings.users]
    wire["curve"] = None if settings.curve is None else [k.decode() for k in settings.curve]
    return wire


def settings_from_wire(wire: Message) -> WebSettings:
    users = tuple(User(name, password_hash, admin=admin)
                  for name, password_hash, admin in wire["users"])
    curve = wire["curve"]
    return replace(WebSettings(**{**wire, "key": b"", "users": (), "curve": None}),
                   key=bytes.fromhex(wire["key"]), users=users, daemons=tuple(wire["daemons"]),
                   curve=None if curve is None else tuple(k.encode() for k in curve))


class Link:
    """A child's link to the hub: calls that wait for the hub's answer, and the hub's requests
    (apply another child's event, send this child's counters) answered as they come."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._apply: Apply = lambda event: None
        self._snapshot: Snapshot = lambda: []
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, path: str) -> Link:
        reader, writer = await asyncio.open_unix_connection(path, limit=MAX_FRAME)
        return cls(reader, writer)

    def serve(self, *, apply: Apply, snapshot: Snapshot) -> None:
        """What to do with the hub's requests (set before :meth:`listen` runs)."""
        self._apply, self._snapshot = apply, snapshot

    async def listen(self) -> None:
        """Read the hub's frames until the link closes (the parent is gone: ``closed`` is set)."""
        try:
            while True:
                self._received(await read_frame(self._reader))
        except LinkClosed as exc:
            log.info("hub_link_closed", reason=str(exc))
        finally:
            self.closed.set()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(LinkClosed("the hub link closed"))

    def _received(self, message: Message) -> None:
        if "re" in message:
            future = self._waiting.pop(message["re"], None)
            if future is not None and not future.done():
                future.set_result(message.get("body"))
        elif message.get("t") == "apply":
            self._apply(message["body"])
            write_frame(self._writer, {"re": message["id"], "body": None})
        elif message.get("t") == "snapshot":
            write_frame(self._writer, {"re": message["id"], "body": self._snapshot()})

    async def call(self, kind: str, body: Any = None, *, timeout: float = CALL_TIMEOUT) -> Any:
        """Send the hub a request and wait for its answer (LinkClosed when it is gone)."""
        if self.closed.is_set():
            raise LinkClosed("the hub link is closed")
        msg_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = future
        write_frame(self._writer, {"t": kind, "id": msg_id, "body": body})
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._waiting.pop(msg_id, None)

    async def tell(self, event: Message) -> None:
        """Have every other process apply ``event``; return once they all have (or the hub's
        time is up: the event is logged as not shared, and this request goes on)."""
        try:
            await self.call("tell", event)
        except (LinkClosed, TimeoutError) as exc:
            log.warning("shared_state_not_told", kind=event.get("kind"), error=repr(exc))

    async def metrics(self) -> Any:
        """Every process's request counters, added up by the hub."""
        return await self.call("gather")

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


async def tell(app: web.Application, event: Message) -> None:
    """Tell the other processes of this port about ``event`` (nothing to do in a single one)."""
    peers = app.get(PEERS)
    if peers is not None:
        await peers.tell(event)
