"""The asyncio client's calls in flight, whatever carries their frames.

:class:`AsyncCalls` owns what both asyncio clients share: the futures of the calls waiting for
a reply and the queues of the streams waiting for events, matching each reply to its caller by
id, a timeout on every call, failing every waiting call at once when the link drops, and the
calls built from ``call`` (large results in chunks, large inputs in parts). A subclass owns the
link: :class:`protocols.client.AsyncClient` a ZeroMQ DEALER, :class:`protocols.streamclient.
StreamClient` a Unix stream to the daemon's stream door. Python 3.8 compatible.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any, AsyncIterator, Dict, List, Optional, Tuple, TypeVar

from protocols.codec import Message
from protocols.errors import ClientClosed, ClientTimeout, ErrorCode, RemoteError
from protocols.messages import JOB_EVENT
from protocols.results import RESULT_CHUNK, chunk_end, chunk_request, unpack_result
from protocols.session import Session, failure
from protocols.uploads import run_async

_Self = TypeVar("_Self", bound="AsyncCalls")


def lost_connection(endpoint: str) -> str:
    """Why the calls waiting on a link that dropped fail (``unavailable``)."""
    return ("the connection to the daemon at %s was lost; the request may or may not "
            "have run" % endpoint)


def _expire(future: "asyncio.Future[Message]", op: str) -> None:
    if not future.done():
        future.set_exception(ClientTimeout("no reply to %s within the timeout" % op))


class AsyncCalls(abc.ABC):
    """asyncio calls over a link the subclass owns; safe to share between tasks of one loop.

    The subclass sets ``endpoint``, ``timeout`` and ``_session``, calls :meth:`_calls_init`,
    and provides :meth:`_prepare`, :meth:`_send_now`, :meth:`_send_when_connected` and
    :meth:`_shut`; it hands each message it reads to :meth:`_deliver`, and calls
    :meth:`_fail_waiting` when its link drops.
    """

    endpoint: str
    timeout: float
    _session: Session

    def _calls_init(self) -> None:
        self._pending: Dict[str, asyncio.Future[Message]] = {}
        self._streams: Dict[str, asyncio.Queue[Message]] = {}
        self._closed = False

    @property
    def max_bytes(self) -> int:
        """The message limit this client keeps to."""
        return self._session.codec.max_bytes

    async def call(self, op: str, body: Any = None, *, timeout: Optional[float] = None) -> Any:
        """Send one request and return the reply's body; raise RemoteError or ClientTimeout."""
        msg_id, frames = self._request(op, body)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        self._pending[msg_id] = future
        try:
            if not self._send_now(frames):
                await self._send_when_connected(frames)
            # A timer rather than asyncio.wait_for, which costs a task-like wrapper per call.
            limit = self.timeout if timeout is None else timeout
            timer = loop.call_later(limit, _expire, future, op)
            try:
                message = await future
            finally:
                timer.cancel()
        finally:
            self._pending.pop(msg_id, None)
        return Session.outcome(op, message)

    async def stream(
        self, op: str, body: Any = None, *, timeout: Optional[float] = None
    ) -> AsyncIterator[Any]:
        """Yield the bodies of the events a streaming request produces, then end on its reply.

        ``timeout`` bounds the wait for each next event, not the whole stream.
        """
        msg_id, frames = self._request(op, body)
        queue: asyncio.Queue[Message] = asyncio.Queue()
        self._streams[msg_id] = queue
        limit = self.timeout if timeout is None else timeout
        try:
            if not self._send_now(frames):
                await self._send_when_connected(frames)
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), limit)
                except asyncio.TimeoutError:
                    raise ClientTimeout("no event from %s within the timeout" % op) from None
                if message.type != JOB_EVENT:
                    Session.outcome(op, message)
                    return
                yield message.body
        finally:
            self._streams.pop(msg_id, None)

    def _request(self, op: str, body: Any) -> Tuple[str, List[bytes]]:
        if self._closed:
            raise ClientClosed("client is closed")
        self._prepare()
        return self._session.request(op, body)

    def _deliver(self, frames: List[Any]) -> None:
        message = self._session.read(frames)
        if message is None or message.re is None:
            return
        queue = self._streams.get(message.re)
        if queue is not None:
            queue.put_nowait(message)
            return
        future = self._pending.get(message.re)
        if future is not None and not future.done():
            future.set_result(message)

    def _fail_waiting(self, why: str) -> None:
        """The link dropped: whatever was asked on it will not be answered."""
        for msg_id, future in list(self._pending.items()):
            if not future.done():
                future.set_result(failure(msg_id, ErrorCode.UNAVAILABLE, why))
        for msg_id, queue in list(self._streams.items()):
            queue.put_nowait(failure(msg_id, ErrorCode.UNAVAILABLE, why))

    # the link's (the subclass's)

    @abc.abstractmethod
    def _prepare(self) -> None:
        """Before a request is encoded: make or check the link as needed."""

    @abc.abstractmethod
    def _send_now(self, frames: List[bytes]) -> bool:
        """Queue the message if the link takes it now (the usual case); False if not."""

    @abc.abstractmethod
    async def _send_when_connected(self, frames: List[bytes]) -> None:
        """Queue the message once the link is up; raise RemoteError ``unavailable`` if the
        daemon cannot be reached soon."""

    @abc.abstractmethod
    def _shut(self) -> None:
        """Close the link (the client is closed)."""

    # calls made of calls

    async def result_chunks(self, job: str, *, chunk: int = RESULT_CHUNK,
                            timeout: Optional[float] = None) -> AsyncIterator[bytes]:
        """The stored result of a finished job as the chunks of its msgpack form, in order;
        whatever its size, no message carries more than ``chunk`` bytes of it."""
        offset, done = 0, False
        while not done:
            reply = await self.call("job.result_chunk", chunk_request(job, offset, chunk),
                                    timeout=timeout)
            data, offset, done = chunk_end(reply, offset)
            if data:
                yield data

    async def result(self, job: str, *, timeout: Optional[float] = None) -> Any:
        """``job.result``'s reply ``{job, result}``; a result too large for one message is
        read in chunks and put together here."""
        try:
            return await self.call("job.result", {"job": job}, timeout=timeout)
        except RemoteError as exc:
            if exc.code != ErrorCode.TOO_LARGE:
                raise
        parts = [part async for part in self.result_chunks(job, timeout=timeout)]
        record = await self.call("job.status", {"job": job}, timeout=timeout)
        return {"job": record["job"], "result": unpack_result(b"".join(parts))}

    async def run(self, op: str, body: Dict[str, Any], *,
                  timeout: Optional[float] = None) -> Any:
        """``run`` or ``submit`` whatever the input's and the result's size: an input over the
        message limit is uploaded in parts first, a result over it read in chunks."""
        return await run_async(self, op, body, timeout)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ClientClosed("client closed"))
        self._shut()

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
