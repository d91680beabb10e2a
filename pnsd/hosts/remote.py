"""Remote workers: the daemon's worker endpoint, where workers on other machines join a pool.

Owns the ROUTER bound to ``worker_endpoint`` (a CURVE server of the ``workers`` domain unless
the node is configured insecure on loopback), decoding what remote workers send (the same
signing, staleness and replay checks as every message), the joins (a ``worker.hello`` naming a
``pts`` whose current generation takes remote workers: ``remote_workers`` in its spec) and
which connection belongs to which generation's worker. A refused join is answered with an
``error`` (``not_found``, ``forbidden`` or ``busy``), logged and counted (refusal code
``worker_join``). Once joined, a worker's messages go to its host
(:class:`pnsd.hosts.worker.WorkerHost`), which treats it like its own (:class:`RemoteSlot`).
It must not dispatch runs or start processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog
import zmq

from pnsd.hosts.handshake import choose_protocol
from pnsd.hosts.workerslot import WorkerSlot
from pnsd.refusals import ANSWER_TEXT, Refusals
from protocols import messages
from protocols.codec import Codec, Message, message_id
from protocols.errors import ErrorCode, ProtocolError
from protocols.pump import Pump

if TYPE_CHECKING:
    from pnsd.curve import CurveGuard

log = structlog.get_logger(__name__)


@dataclass(eq=False)
class RemoteSlot(WorkerSlot):
    """A worker that joined over the worker endpoint: no process of ours, a connection."""

    where: str = ""                  # its host name and address, for status
    pid: int = 0                     # its pid on its own machine (from its hello)
    on_lost: Callable[[RemoteSlot, str], None] | None = None

    def kill(self, reason: str, *, counts: bool) -> bool:
        """Drop it from the pool (its run fails or goes elsewhere); it may rejoin."""
        if self.kill_reason:
            return False
        self.kill_reason, self.ready = reason, False
        log.warning("remote_worker_lost", worker=self.index, where=self.where, reason=reason)
        if self.on_lost is not None:
            self.on_lost(self, reason)
        return True


class Pool(Protocol):
    """What the gate needs of a worker host."""

    def join(self, identity: bytes, hello: dict[str, Any], *,
             route: Callable[[list[bytes]], None], gone: Callable[[], None]) -> RemoteSlot: ...

    def deliver(self, worker: WorkerSlot, message: Message) -> None: ...


class JoinRefused(Exception):
    """Why a join was refused: an error code and a message for the worker."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


Finder = Callable[[str], Pool]   # the pool of a PTS name, or raise JoinRefused


class WorkerGate:
    """The ROUTER remote workers connect to; routes each connection to its pool."""

    def __init__(self, context: zmq.Context[Any], codec: Codec, *, endpoint: str,
                 find: Finder, refusals: Refusals, guard: CurveGuard | None) -> None:
        self._codec = codec
        self._find = find
        self.refusals = refusals
        self.socket: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.socket.setsockopt(zmq.MAXMSGSIZE, codec.max_bytes + 2**20)
        if guard is not None:
            guard.secure(self.socket, "workers")
        self.socket.bind(endpoint)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._pump = Pump(self.socket, self._receive)
        self._joined: dict[bytes, tuple[Pool, RemoteSlot]] = {}
        log.info("worker_gate_listening", endpoint=self.endpoint, curve=guard is not None)

    def close(self) -> None:
        self._pump.close()

    def _receive(self, frames: list[bytes]) -> None:
        identity = frames[0]
        try:
            message = self._codec.decode(frames[1:])
        except ProtocolError as exc:
            self.refusals.count(exc.code, exc.message, type=exc.details.get("type"),
                                endpoint="workers")
            if exc.code == ErrorCode.AUTH:      # another signing key: say so, unsigned
                self._refuse_unsigned(identity, frames[1:], exc)
            return
        if message.type == messages.WORKER_HELLO:
            self._join(identity, message)
            return
        joined = self._joined.get(identity)
        if joined is None:
            log.debug("worker_message_ignored", reason="not joined", type=message.type)
            return
        pool, slot = joined
        pool.deliver(slot, message)

    def _join(self, identity: bytes, message: Message) -> None:
        body = message.body if isinstance(message.body, dict) else {}
        name = body.get("pts")
        previous = self._joined.pop(identity, None)
        if previous is not None:       # a rejoin on the same connection: leave first
            previous[1].route = None   # (no worker.stop: it would leave again)
            previous[1].kill("rejoined", counts=False)
        try:
            if not isinstance(name, str) or not name:
                raise JoinRefused(ErrorCode.BAD_REQUEST, "worker.hello names no pts")
            protocol, refusal = choose_protocol(body)
            if refusal:
                raise JoinRefused(ErrorCode.VERSION, refusal)
            pool = self._find(name)
            slot = pool.join(identity, body, route=lambda frames: self._send(identity, frames),
                             gone=lambda: self._forget(identity))
        except JoinRefused as exc:
            self.refusals.count("worker_join", exc.message, pts=name, host=body.get("host"))
            if self.refusals.may_answer():      # the daemon's one answer budget
                self.refusals.answered()
                self._answer(identity, message, exc.code, exc.message)
            return
        slot.last_seen = time.monotonic()
        self._joined[identity] = (pool, slot)
        if "protocols" in body:
            self._send(identity, self._codec.encode(messages.WORKER_WELCOME,
                                                    {"protocol": protocol}, re=message.id))

    def _refuse_unsigned(self, identity: bytes, frames: list[bytes],
                         exc: ProtocolError) -> None:
        """Answer a message refused before it was authenticated, as the client front door
        does (SPEC.md, "Refusals"): unsigned, compact, within the answer budget."""
        re = message_id(frames)
        if re is None or not self.refusals.may_answer():
            return
        self.refusals.answered()
        body = {"code": exc.code, "message": exc.message[:ANSWER_TEXT], "details": {}}
        answer = self._codec.encode(messages.ERROR, body, re=re)
        answer[1] = b""
        self._send(identity, answer)

    def _forget(self, identity: bytes) -> None:
        self._joined.pop(identity, None)

    def _answer(self, identity: bytes, message: Message, code: str, text: str) -> None:
        body = {"code": code, "message": text, "details": {}}
        self._send(identity, self._codec.encode(messages.ERROR, body, re=message.id))

    def _send(self, identity: bytes, frames: list[bytes]) -> None:
        if self._pump.closed:
            return
        try:
            self._pump.send([identity, *frames])
        except zmq.ZMQError as exc:     # gone or not reading: the heartbeat check drops it
            log.debug("remote_send_failed", error=exc.strerror)
