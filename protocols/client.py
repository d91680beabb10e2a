"""The PNS client library: call a daemon's operations over ZeroMQ.

One implementation, two flavours over the sans-I/O core :class:`protocols.session.Session`.
:class:`AsyncClient` drives it with a DEALER pumped by the event loop (:mod:`protocols.pump`);
:class:`Client` drives it with a blocking DEALER. Both keep many requests in flight on one
socket and give every call a timeout. Owns sockets; never decides what a reply means beyond
success or error. The socket, its monitor and the session both flavours share are
:mod:`protocols.connection`'s. Python 3.8 compatible.

The link holds whatever a peer sends: a request over the size limit is refused before it is
sent (``too_large``), a reply the codec refuses fails its call with the codec's error, and no
socket sets ``ZMQ_MAXMSGSIZE`` (libzmq closes a connecting socket for good on an over-size
message). A monitor on the socket sees the connection drop: every call waiting on it fails at
once with ``unavailable``, and the next call goes on a new DEALER. A result too large for one
message is read in chunks (``result_chunks``, ``result``; see SPEC.md, ``job.result_chunk``),
and a run's input too large for one is uploaded in parts first (``run``; :mod:`protocols.uploads`).

Over ``tcp://`` a client gives ``curve=(server public, client public, client secret)`` (z85
keys, :func:`protocols.membership.load_keys` reads them from ``pnsd keys new`` files); a CURVE
handshake the daemon refuses (an unknown client key, a wrong server key) fails calls with
``auth`` saying so instead of a plain ``unavailable``.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Iterator, List, Optional, Set

import zmq

from protocols.calls import AsyncCalls
from protocols.codec import Message
from protocols.connection import CONNECT_WAIT, Connection, connect_waits, unavailable
from protocols.errors import ClientTimeout, ErrorCode, RemoteError
from protocols.messages import JOB_EVENT
from protocols.pump import Pump, recv_frames, send_frames
from protocols.results import RESULT_CHUNK, chunk_end, chunk_request, unpack_result
from protocols.session import TRACE, failure
from protocols.session import Session as _Session
from protocols.uploads import run_blocking

__all__ = ["TRACE", "AsyncClient", "Client", "Pending"]


class AsyncClient(Connection, AsyncCalls):
    """asyncio client over ZeroMQ; safe to share between tasks of one event loop."""

    def _setup(self) -> None:
        self._calls_init()
        self._pump: Optional[Pump] = None   # made on first use, in the caller's loop
        self._watch: Optional[Pump] = None  # the monitor's, made with it

    def _prepare(self) -> None:
        if not self._pending and not self._streams:
            # A drop the monitor reported while no call waited (the daemon restarted while this
            # client sat idle, say) concerns no call: read it now, before it can fail this one.
            self._read_events(self._on_monitor)
        self._renew()       # after a drop: a new socket (and pumps for it)
        if self._pump is None:      # made on first use, in the caller's loop
            self._pump = Pump(self._socket, self._deliver)
            self._watch = Pump(self._monitor, self._on_monitor)

    def _close_sockets(self) -> None:
        if self._pump is None or self._watch is None:
            super()._close_sockets()
            return
        self._watch.close()     # a pump closes its socket
        self._pump.close()
        self._pump = self._watch = None

    def _on_monitor(self, frames: List[bytes]) -> None:
        why = self._lost(frames)
        if why is not None:
            self._fail_waiting(why)

    def _send_now(self, frames: List[bytes]) -> bool:
        assert self._pump is not None
        try:
            self._pump.send(frames)
        except zmq.Again:
            return False
        return True

    async def _send_when_connected(self, frames: List[bytes]) -> None:
        """Not connected (yet): retry for a moment, then report the daemon absent.

        ZeroMQ has no "connected" event short of a monitor socket, so this backs off on the
        clock.
        """
        async for _ in connect_waits():
            if self._send_now(frames):
                return
        raise unavailable(self.endpoint, self.handshake)

    def _shut(self) -> None:
        self._close_sockets()
        self._release()


class Pending:
    """A request sent by the blocking client whose reply is collected later."""

    def __init__(self, client: "Client", op: str, msg_id: str) -> None:
        self._client = client
        self.op = op
        self.msg_id = msg_id

    def result(self, timeout: Optional[float] = None) -> Any:
        return self._client._wait(self, timeout)


class Client(Connection):
    """Blocking client for one thread; ``send`` many, then collect each ``Pending.result``."""

    def _setup(self) -> None:
        self._arrived: Dict[str, List[Message]] = {}
        self._waiting: Set[str] = set()
        self._poll_sockets()

    def _poll_sockets(self) -> None:
        # Pollers made once a socket: Socket.poll builds a new one per call.
        self._readable, self._writable = zmq.Poller(), zmq.Poller()
        self._readable.register(self._socket, zmq.POLLIN)
        self._readable.register(self._monitor, zmq.POLLIN)
        self._writable.register(self._socket, zmq.POLLOUT)

    def call(self, op: str, body: Any = None, *, timeout: Optional[float] = None) -> Any:
        return self.send(op, body).result(timeout)

    def send(self, op: str, body: Any = None) -> Pending:
        if not self._waiting:
            self._check_link()      # a drop seen while nothing waited fails nothing (AsyncClient)
        if self._renew():           # after a drop: a new socket
            self._poll_sockets()
        msg_id, frames = self._session.request(op, body)
        # Not connected (yet): give the connection a moment, then report the daemon absent.
        if not self._writable.poll(int(CONNECT_WAIT * 1000)):
            self._check_link()      # a failed handshake says why
            raise unavailable(self.endpoint, self.handshake)
        try:
            send_frames(self._socket, frames)
        except zmq.Again:
            raise unavailable(self.endpoint) from None
        self._waiting.add(msg_id)
        return Pending(self, op, msg_id)

    def stream(
        self, op: str, body: Any = None, *, timeout: Optional[float] = None
    ) -> Iterator[Any]:
        """Yield event bodies of a streaming request; ``timeout`` bounds each wait."""
        pending = self.send(op, body)
        try:
            while True:
                message = self._next_for(pending.msg_id, timeout)
                if message.type != JOB_EVENT:
                    _Session.outcome(op, message)
                    return
                yield message.body
        finally:
            self._forget(pending.msg_id)

    def _wait(self, pending: Pending, timeout: Optional[float]) -> Any:
        try:
            message = self._next_for(pending.msg_id, timeout)
        finally:
            self._forget(pending.msg_id)
        return _Session.outcome(pending.op, message)

    def _forget(self, msg_id: str) -> None:
        self._waiting.discard(msg_id)
        self._arrived.pop(msg_id, None)

    def _next_for(self, msg_id: str, timeout: Optional[float]) -> Message:
        """The next message answering ``msg_id``, keeping others for their own callers."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._arrived.get(msg_id):
            left = deadline - time.monotonic()
            ready = dict(self._readable.poll(int(left * 1000) + 1)) if left > 0 else {}
            if not ready:
                raise ClientTimeout("no reply within the timeout")
            if self._monitor in ready:
                self._check_link()
            try:
                message = self._session.read(recv_frames(self._socket))
            except zmq.Again:   # reported readable, then not: poll again
                continue
            if message is not None and message.re in self._waiting:
                self._arrived.setdefault(message.re, []).append(message)
        queue = self._arrived[msg_id]
        message = queue.pop(0)
        if not queue:
            del self._arrived[msg_id]
        return message

    def _check_link(self) -> None:
        """Read the monitor's events; if the connection dropped, every waiting call fails."""
        self._read_events(self._on_monitor)

    def _on_monitor(self, frames: List[bytes]) -> None:
        why = self._lost(frames)
        if why is not None:
            for msg_id in self._waiting:
                self._arrived.setdefault(msg_id, []).append(
                    failure(msg_id, ErrorCode.UNAVAILABLE, why))

    def result_chunks(self, job: str, *, chunk: int = RESULT_CHUNK,
                      timeout: Optional[float] = None) -> Iterator[bytes]:
        """The blocking :meth:`AsyncClient.result_chunks`."""
        offset, done = 0, False
        while not done:
            reply = self.call("job.result_chunk", chunk_request(job, offset, chunk),
                              timeout=timeout)
            data, offset, done = chunk_end(reply, offset)
            if data:
                yield data

    def result(self, job: str, *, timeout: Optional[float] = None) -> Any:
        """The blocking :meth:`AsyncClient.result`."""
        try:
            return self.call("job.result", {"job": job}, timeout=timeout)
        except RemoteError as exc:
            if exc.code != ErrorCode.TOO_LARGE:
                raise
        blob = b"".join(self.result_chunks(job, timeout=timeout))
        record = self.call("job.status", {"job": job}, timeout=timeout)
        return {"job": record["job"], "result": unpack_result(blob)}

    def run(self, op: str, body: Dict[str, Any], *, timeout: Optional[float] = None) -> Any:
        """The blocking :meth:`AsyncClient.run`."""
        return run_blocking(self, op, body, timeout)

    def close(self) -> None:
        self._close_sockets()
        self._release()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
