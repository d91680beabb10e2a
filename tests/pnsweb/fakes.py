"""A fake daemon client for pnsweb tests: a programmable table of operation -> handler.

Implements what pnsweb needs of ``protocols.client.AsyncClient`` (``pnsweb.keys.DaemonClient``):
``call``, ``stream`` and ``close``. A handler gets the request body and returns the reply body,
or raises ``protocols.errors.RemoteError`` (or ``ClientTimeout``) as the real client would.
Every call is recorded, so tests can assert what pnsweb asked the daemon for.

    daemon = FakeDaemon()
    daemon.on("run", lambda body: {"job": "j1", "result": {...}})
    daemon.fail("pts.hook", "busy", "hello is busy")
    app = create_app(settings, client=daemon)
    ...
    assert daemon.calls[-1] == Call("run", {...}, None)

Async handlers are awaited, so a test can hold a call open (an ``asyncio.Event``) to exercise
concurrency. An operation with no handler answers ``unknown_op``, as a real daemon does.
Stream handlers return (or yield) the event bodies; the stream ends after the last one.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from protocols.errors import ClientClosed, ClientTimeout, ErrorCode, RemoteError

Handler = Callable[[Any], Any | Awaitable[Any]]
StreamHandler = Callable[[Any], Iterable[Any] | AsyncIterator[Any]]


@dataclass(frozen=True)
class Call:
    """One recorded request: the operation, its body and the timeout the caller gave."""

    op: str
    body: Any
    timeout: float | None = None


@dataclass
class FakeDaemon:
    """A stand-in for ``AsyncClient`` with a programmable table of op -> handler."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    streams: dict[str, StreamHandler] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    closed: bool = False
    is_down: bool = False

    # -- programming ---------------------------------------------------------------------------

    def on(self, op: str, handler: Handler) -> FakeDaemon:
        """Answer ``op`` with ``handler(body)`` (awaited when it is a coroutine)."""
        self.handlers[op] = handler
        return self

    def reply(self, op: str, body: Any) -> FakeDaemon:
        """Answer ``op`` with a fixed reply body."""
        return self.on(op, lambda _body: body)

    def fail(
        self, op: str, code: str, message: str = "", details: dict[str, Any] | None = None
    ) -> FakeDaemon:
        """Answer ``op`` with a protocol error, as the real client raises it."""

        def raise_error(_body: Any) -> Any:
            raise RemoteError(code, message or code, details or {})

        return self.on(op, raise_error)

    def time_out(self, op: str) -> FakeDaemon:
        """Let ``op`` time out on the client side (no reply within the call's timeout)."""

        def raise_timeout(_body: Any) -> Any:
            raise ClientTimeout(f"no reply to {op} within the timeout")

        return self.on(op, raise_timeout)

    def down(self) -> FakeDaemon:
        """Every call fails as when the daemon is not reachable (stopped or restarting)."""
        self.is_down = True
        return self

    def up(self) -> FakeDaemon:
        """Undo :meth:`down`: the programmed handlers answer again (the daemon is back)."""
        self.is_down = False
        return self

    def on_stream(self, op: str, handler: StreamHandler) -> FakeDaemon:
        """Answer a streaming ``op`` with the events ``handler(body)`` produces."""
        self.streams[op] = handler
        return self

    # -- inspection ----------------------------------------------------------------------------

    def calls_of(self, op: str) -> list[Call]:
        return [call for call in self.calls if call.op == op]

    @property
    def ops(self) -> list[str]:
        return [call.op for call in self.calls]

    # -- the DaemonClient surface --------------------------------------------------------------

    async def call(
        self, op: str, body: Any = None, *, timeout: float | None = None  # noqa: ASYNC109 - AsyncClient's per-call timeout
    ) -> Any:
        self._check(op, body, timeout)
        handler = self.handlers.get(op)
        if handler is None:
            raise RemoteError(ErrorCode.UNKNOWN_OP, f"no handler for {op}")
        result = handler(body)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def stream(
        self, op: str, body: Any = None, *, timeout: float | None = None  # noqa: ASYNC109 - as above
    ) -> AsyncIterator[Any]:
        self._check(op, body, timeout)
        handler = self.streams.get(op)
        if handler is None:
            raise RemoteError(ErrorCode.UNKNOWN_OP, f"no stream handler for {op}")
        events = handler(body)
        if isinstance(events, AsyncIterator):
            async for event in events:
                yield event
        else:
            for event in events:
                yield event

    async def close(self) -> None:
        self.closed = True

    def _check(self, op: str, body: Any, timeout: float | None) -> None:
        if self.closed:
            raise ClientClosed("client is closed")
        self.calls.append(Call(op, body, timeout))
        if self.is_down:
            raise RemoteError(ErrorCode.UNAVAILABLE, "daemon at ipc://fake is not reachable")
