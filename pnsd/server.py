"""The daemon's front door: a ZeroMQ ROUTER that turns frames into handler calls and back.

Owns the client-facing sockets, decoding and checking every message (signature, version,
staleness, replay, size; refusals are counted, logged and answered within the budgets of
:mod:`pnsd.refusals`), dispatching each request to its handler, and sending the reply or a
protocol error: at once when the handler returns the body, when a :class:`pnsd.later.Later`
is settled, or from a task of its own when the handler returns an awaitable. A
:class:`protocols.pump.Pump` drives the socket.
It knows nothing of PTS or jobs: the handler table does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any

import structlog
import zmq

from pnsd.errors import DaemonError
from pnsd.later import Later
from pnsd.refusals import ANSWER_TEXT, Refusals
from protocols.codec import Codec, Message, message_id
from protocols.errors import ErrorCode, ProtocolError
from protocols.messages import ERROR, JOB_EVENT, op_of, reply_type
from protocols.pump import Pump

log = structlog.get_logger(__name__)

# A handler returns the reply body, or when it cannot finish within its call, a Later of it
# (settled by a callback) or an awaitable of it.
Handler = Callable[[Any], Any]
StreamHandler = Callable[[Any], AsyncIterator[Any]]


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
        self._tasks: set[asyncio.Task[None]] = set()
        self._awaited = 0                    # Laters not settled yet
        self._all_settled = asyncio.Event()  # no Later awaited: drain waits for this
        self._all_settled.set()
        self.bound: list[str] = []
        self.refusals = Refusals()

    def bind(self) -> None:
        for endpoint in self.endpoints:
            self.socket.bind(endpoint)
            self.bound.append(self.socket.getsockopt_string(zmq.LAST_ENDPOINT))
        log.info("server_listening", endpoints=self.bound)

    async def serve(self) -> None:
        """Receive until cancelled; in-flight requests are left to :meth:`drain`."""
        self._pump = Pump(self.socket, self._receive)
        try:
            await asyncio.Event().wait()  # the pump works from the loop's reader callbacks
        finally:
            self._pump.close()

    def _receive(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            return
        identity, rest = frames[0], frames[1:]
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

    def _refuse(self, identity: bytes, frames: list[bytes], exc: ProtocolError) -> None:
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
        if self._pump is not None and not self._pump.closed:
            with contextlib.suppress(zmq.Again):    # a peer that does not read loses its answers
                self._pump.send([identity, *answer])

    def _handle(self, identity: bytes, message: Message) -> None:
        """Answer now what a handler finishes within its call; await the rest in a task."""
        op = op_of(message.type)
        handler = self.handlers.get(op)
        if handler is None:
            self._start(self._stream(identity, message, op))
            return
        started = time.perf_counter()
        try:
            body = handler(message.body)
        except Exception as exc:
            self._fail(identity, message, op, started, exc)
            return
        if isinstance(body, dict):       # most replies, and the cheapest check: first
            self._reply(identity, message, op, started, body)
        elif isinstance(body, Later):
            self._awaited += 1
            self._all_settled.clear()

            def settled(value: Any, error: Exception | None) -> None:
                self._awaited -= 1
                if self._awaited == 0:
                    self._all_settled.set()
                if error is not None:
                    self._fail(identity, message, op, started, error)
                else:
                    self._reply(identity, message, op, started, value)

            body.then(settled)
        elif isinstance(body, Awaitable):
            self._start(self._finish(identity, message, op, started, body))
        else:
            self._reply(identity, message, op, started, body)

    def _start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, identity: bytes, message: Message, op: str, started: float,
                      pending: Awaitable[Any]) -> None:
        try:
            body = await pending
        except Exception as exc:
            self._fail(identity, message, op, started, exc)
        else:
            self._reply(identity, message, op, started, body)

    async def _stream(self, identity: bytes, message: Message, op: str) -> None:
        started = time.perf_counter()
        try:
            if op not in self.streams:
                raise ProtocolError(ErrorCode.UNKNOWN_OP, f"unknown message type {message.type!r}")
            async for event in self.streams[op](message.body):
                self._send(identity, JOB_EVENT, event, message.id)
        except Exception as exc:
            self._fail(identity, message, op, started, exc)
        else:
            self._reply(identity, message, op, started, {})

    def _reply(self, identity: bytes, message: Message, op: str, started: float,
               body: Any) -> None:
        self._send(identity, reply_type(op), body, message.id)
        self._done(message, op, started, "ok")

    def _fail(self, identity: bytes, message: Message, op: str, started: float,
              exc: Exception) -> None:
        if isinstance(exc, DaemonError | ProtocolError):
            code, body = exc.code, {"code": exc.code, "message": exc.message,
                                    "details": exc.details}
        else:  # a handler bug: log it here, never send the traceback
            code = ErrorCode.INTERNAL
            log.error("handler_failed", op=op, msg=message.id, exc_info=exc)
            body = {"code": code, "message": "internal error; see the daemon log", "details": {}}
        self._send(identity, ERROR, body, message.id)
        self._done(message, op, started, code)

    @staticmethod
    def _done(message: Message, op: str, started: float, code: str) -> None:
        if log.is_enabled_for(logging.DEBUG):    # skip building the line (every request)
            log.debug("request", op=op, msg=message.id, code=code,
                      ms=round((time.perf_counter() - started) * 1000, 3))

    def _send(self, identity: bytes, msg_type: str, body: Any, re: str) -> None:
        try:
            frames = self.codec.encode(msg_type, body, re=re)
        except ProtocolError as exc:   # e.g. too_large: checked here, never dropped by a socket
            log.warning("reply_refused", re=re, type=msg_type, code=exc.code, error=exc.message)
            frames = self.codec.encode(ERROR, exc.to_body(), re=re)
        if self._pump is None or self._pump.closed:   # stopped: a late answer has no one to go to
            return
        try:
            self._pump.send([identity, *frames])
        except zmq.Again:
            log.warning("reply_dropped", re=re, reason="peer not reading")

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` for in-flight requests, then cancel the tasks left.

        A request answered by a Later is left to its work (a run ends when its host stops);
        an answer after the server closed is dropped.
        """
        waits: set[asyncio.Future[Any]] = set(self._tasks)
        if not self._all_settled.is_set():
            waits.add(asyncio.ensure_future(self._all_settled.wait()))
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def close(self) -> None:
        if self._pump is None:
            self.socket.close(linger=0)
