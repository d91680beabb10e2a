"""The daemon's front door: a ZeroMQ ROUTER that turns frames into handler calls and back.

Owns the client-facing sockets, decoding and checking every message (signature, version,
staleness, replay, size; refusals are counted, logged and answered within the budgets of
:mod:`pnsd.refusals`), running each request's handler (a coroutine) in a task of its own, and
sending the reply or a protocol error when it ends. A :class:`protocols.pump.Pump` drives the
socket. It knows nothing of PTS or jobs: the handler table does.

Stopping (SPEC.md, "Stopping"): once :meth:`Server.serve` ends, every request read is still
answered. One that arrives then is not run: it is answered ``unavailable`` with
``details.stopping`` (any client may send it again, here once the daemon is back or to another
node). One in flight is answered when it ends; one :meth:`Server.drain` gives up on is
answered ``unavailable`` as cut short (it may or may not have run). :meth:`Server.close` then
gives the replies written a moment to leave.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

import structlog
import zmq

from pnsd.refusals import ANSWER_TEXT, Refusals
from protocols.codec import Codec, Message, message_id
from protocols.errors import CodedError, ErrorCode, ProtocolError
from protocols.messages import ERROR, JOB_EVENT, op_of, reply_type
from protocols.pump import Pump

log = structlog.get_logger(__name__)

STOPPING = "the daemon is stopping: this request was not run; send it again once it is back"
CUT_SHORT = "the daemon stopped before this request ended: it may or may not have run"
CLOSE_LINGER_MS = 1000  # how long the last replies may take to leave a closed socket

Handler = Callable[[Any], Awaitable[Any]]       # request body -> reply body
StreamHandler = Callable[[Any], AsyncIterator[Any]]


class Door(Protocol):
    """A connection to a peer that came in by another door than the ROUTER (the stream door,
    :mod:`pnsd.streamdoor`): replies to its requests are sent on it."""

    def send(self, frames: Sequence[Any]) -> None: ...


# Who a request came from, for its reply: a ROUTER peer's identity, or a connection of its own
Peer = bytes | Door


class Server:
    """Serves the handler tables on one ROUTER bound to ``endpoints``."""

    def __init__(
        self,
        context: zmq.Context[Any],
        codec: Codec,
        *,
        handlers: Mapping[str, Handler],
        streams: Mapping[str, StreamHandler],
        endpoints: list[str],
        refusals: Refusals | None = None,
    ) -> None:
        self.codec = codec
        self.handlers = handlers
        self.streams = streams
        self.endpoints = endpoints
        self.socket: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, 100_000)
        self.socket.setsockopt(zmq.RCVHWM, 100_000)
        # A hard cap well above the soft limit: bigger frames cost the peer its connection;
        # messages between the two are answered with a too_large error.
        self.socket.setsockopt(zmq.MAXMSGSIZE, codec.max_bytes + 2**20)
        self._pump: Pump | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}   # by id() of the request's message
        self.stopping = False       # new requests are answered unavailable, not run
        self.bound: list[str] = []
        self.refusals = refusals or Refusals()   # shared by every front door of a daemon
        # Read once: the level is set before the daemon starts (and a line per request is a
        # debug one): no level check on every request.
        self._log_requests = log.is_enabled_for(logging.DEBUG)

    def bind(self) -> None:
        for endpoint in self.endpoints:
            self.socket.bind(endpoint)
            self.bound.append(self.socket.getsockopt_string(zmq.LAST_ENDPOINT))
        log.info("server_listening", endpoints=self.bound)

    async def serve(self) -> None:
        """Serve until cancelled; then stop: the socket is still read, and every request is
        answered (see the module's docstring) until :meth:`close`."""
        self._pump = Pump(self.socket, self._receive)
        try:
            await asyncio.Event().wait()  # the pump works from the loop's reader callbacks
        finally:
            self.stopping = True

    def _receive(self, frames: list[bytes]) -> None:
        if len(frames) >= 2:
            self.receive(frames[0], frames[1:])

    def receive(self, identity: Peer, rest: list[Any]) -> None:
        """Decode and answer one message a peer sent (its frames, the identity taken off)."""
        try:
            message = self.codec.decode(rest)
        except ProtocolError as exc:
            self._refuse(identity, rest, exc)
            return
        if message.trace:  # a task started here copies the binding; it ends with the request
            # bind and reset, not bound_contextvars: its context manager costs more per request
            tokens = structlog.contextvars.bind_contextvars(trace=message.trace)
            try:
                self._handle(identity, message)
            finally:
                structlog.contextvars.reset_contextvars(**tokens)
        else:
            self._handle(identity, message)

    def _refuse(self, identity: Peer, frames: list[bytes], exc: ProtocolError) -> None:
        """Count a refused message; log and answer it within the budgets (SPEC.md, "Refusals").

        An answer is compact (no details, a short text). A message refused before it was
        authenticated (no ``re`` in the error) is answered unsigned: the daemon signs no text
        for a peer that has not shown the key.
        """
        re = exc.details.get("re")
        self.refusals.count(exc.code, exc.message, type=exc.details.get("type"))
        if not self.refusals.may_answer():
            return
        authenticated = re is not None
        if re is None:
            re = message_id(frames)
            if re is None:          # no header to answer: dropped, at no cost to the budget
                return
        self.refusals.answered()
        body = {"code": exc.code, "message": exc.message[:ANSWER_TEXT], "details": {}}
        answer = self.codec.encode(ERROR, body, re=re)
        if not authenticated:
            answer[1] = b""
        self._put(identity, answer)     # a peer that does not read loses its answers

    def _handle(self, identity: Peer, message: Message) -> None:
        if self.stopping:
            self._send(identity, ERROR, _unavailable(STOPPING, stopping=True), message.id)
            return
        op = op_of(message.type)
        handler = self.handlers.get(op)
        if handler is None:
            self._start(message, self._stream(identity, message, op))
        else:
            self._start(message, self._answer(identity, message, op, handler))

    def _start(self, message: Message, work: Coroutine[Any, Any, None]) -> None:
        # The task leaves the table at the end of its own coroutine (keyed by its message,
        # which lives as long as it), not by a done callback: that would be one more callback
        # scheduled and run for every request.
        self._tasks[id(message)] = asyncio.get_running_loop().create_task(work)

    async def _answer(self, identity: Peer, message: Message, op: str,
                      handler: Handler) -> None:
        started = time.perf_counter()
        try:
            body = await handler(message.body)
        except asyncio.CancelledError:    # only drain cancels a request: the daemon stops
            self._send(identity, ERROR, _unavailable(CUT_SHORT), message.id)
            raise
        except Exception as exc:
            self._fail(identity, message, op, started, exc)
        else:
            self._reply(identity, message, op, started, body)
        finally:
            self._tasks.pop(id(message), None)

    async def _stream(self, identity: Peer, message: Message, op: str) -> None:
        started = time.perf_counter()
        try:
            if op not in self.streams:
                raise ProtocolError(ErrorCode.UNKNOWN_OP, f"unknown message type {message.type!r}")
            async for event in self.streams[op](message.body):
                self._send(identity, JOB_EVENT, event, message.id)
        except asyncio.CancelledError:
            self._send(identity, ERROR, _unavailable(CUT_SHORT), message.id)
            raise
        except Exception as exc:
            self._fail(identity, message, op, started, exc)
        else:
            self._reply(identity, message, op, started, {})
        finally:
            self._tasks.pop(id(message), None)

    def _reply(self, identity: Peer, message: Message, op: str, started: float,
               body: Any) -> None:
        self._send(identity, reply_type(op), body, message.id)
        if self._log_requests:      # no call at all otherwise (every request)
            self._done(message, op, started, "ok")

    def _fail(self, identity: Peer, message: Message, op: str, started: float,
              exc: Exception) -> None:
        if isinstance(exc, CodedError):
            code, body = exc.code, exc.to_body()
        else:  # a handler bug: log it here, never send the traceback
            code = ErrorCode.INTERNAL
            log.error("handler_failed", op=op, msg=message.id, exc_info=exc)
            body = {"code": code, "message": "internal error; see the daemon log", "details": {}}
        self._send(identity, ERROR, body, message.id)
        if self._log_requests:
            self._done(message, op, started, code)

    @staticmethod
    def _done(message: Message, op: str, started: float, code: str) -> None:
        log.debug("request", op=op, msg=message.id, code=code,
                  ms=round((time.perf_counter() - started) * 1000, 3))

    def _send(self, identity: Peer, msg_type: str, body: Any, re: str) -> None:
        try:
            frames = self.codec.encode(msg_type, body, re=re)
        except ProtocolError as exc:   # e.g. too_large: checked here, never dropped by a socket
            log.warning("reply_refused", re=re, type=msg_type, code=exc.code, error=exc.message)
            frames = self.codec.encode(ERROR, exc.to_body(), re=re)
        if not self._put(identity, frames):
            log.warning("reply_dropped", re=re, reason="peer not reading")

    def _put(self, identity: Peer, frames: list[Any]) -> bool:
        """Send a message to its peer; False if a ROUTER peer's queue is full (it does not
        read). A connection of its own (a door's) sees to that itself; after the server
        stopped, a late message has no one to go to."""
        if not isinstance(identity, bytes):
            identity.send(frames)
        elif self._pump is not None and not self._pump.closed:
            try:
                self._pump.send([identity, *frames])
            except zmq.Again:
                return False
        return True

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for in-flight requests, then cancel the tasks left (an
        answer after the server closed is dropped)."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks.values()), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self._tasks.clear()    # (one cancelled before it began never left the table)

    def close(self) -> None:
        """Close the socket; the replies already written get CLOSE_LINGER_MS to leave."""
        if self._pump is None:
            self.socket.close(linger=0)
        else:
            self._pump.close(linger=CLOSE_LINGER_MS)


def _unavailable(message: str, **details: Any) -> dict[str, Any]:
    return {"code": ErrorCode.UNAVAILABLE, "message": message, "details": details}
