"""A remote worker's place in a node's pool: CURVE keys, joining, rejoining, refusals.

A worker started with ``--pts NAME`` connects to a node's ``worker_endpoint`` (usually over
``tcp://`` with CURVE) instead of being started by the daemon. :class:`Membership` watches the
connection (a socket monitor): once a CURVE handshake succeeds it says ``worker.hello`` (with
``pts``) to join the PTS's pool; after a ``worker.stop`` or a reconnect it says hello again
(rejoins); a handshake the node refuses, or an ``error`` answering the hello (the PTS does not
exist or takes no remote workers), ends the worker with exit code 6 and a line saying why.
Imports only pyzmq and the stdlib (Python 3.8+).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import zmq
import zmq.auth
from zmq.utils.monitor import parse_monitor_message

from protocols import messages
from protocols.codec import new_message_id, read_refusal

EXIT_REFUSED = 6
REJOIN_DELAY = 1.0     # seconds between a worker.stop and the hello that rejoins the pool
_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_DISCONNECTED
           | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
           | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


def load_keys(server_key: str, key: str) -> Tuple[bytes, bytes, bytes]:
    """(server public, own public, own secret) from key files made by ``pnsd keys new``."""
    server_public, _secret = zmq.auth.load_certificate(server_key)
    public, secret = zmq.auth.load_certificate(key)
    if secret is None:
        raise ValueError("%s holds no secret key (give the .key_secret file)" % key)
    return server_public, public, secret


def secure_client(socket: "zmq.Socket[Any]", keys: Tuple[bytes, bytes, bytes]) -> None:
    """Make ``socket`` (before it connects) a CURVE client of the server whose key is first."""
    socket.curve_serverkey, socket.curve_publickey, socket.curve_secretkey = keys


class Membership:
    """Join, rejoin and refusal of one remote worker; driven by the runtime's poll loop."""

    def __init__(self, socket: "zmq.Socket[Any]", hello: Dict[str, Any], *, pts: str) -> None:
        self.monitor = socket.get_monitor_socket(_EVENTS)
        self.hello = dict(hello, pts=pts)
        self.connected = False
        self.joined = False
        self.rejoin_at = 0.0
        self.hello_id = None  # type: Optional[str]
        self.refusal = ""     # set when the node refused this worker: it exits

    def on_event(self) -> bool:
        """One monitor event (the caller saw the monitor readable); True if it was a refusal."""
        try:
            event = parse_monitor_message(self.monitor.recv_multipart(zmq.NOBLOCK))
        except zmq.Again:
            return False
        kind = event["event"]
        if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.connected, self.joined, self.rejoin_at = True, False, 0.0
        elif kind == zmq.EVENT_DISCONNECTED:
            self.connected = self.joined = False
        elif kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            self.refusal = ("the node refused this worker's CURVE key (is its public key in "
                            "the node's curve/workers directory?)")
        else:
            self.refusal = ("the CURVE handshake with the node failed (is --server-key the "
                            "node's curve/server.key?)")
        return bool(self.refusal)

    def due(self, busy: bool) -> bool:
        """Whether a hello should go out now: connected, not joined, idle, delay over."""
        return (self.connected and not self.joined and not busy
                and time.monotonic() >= self.rejoin_at)

    def join(self, send: Callable[..., None]) -> None:
        """Say hello (``send(type, body, msg_id=…)``): join, or rejoin, the PTS's pool."""
        msg_id = new_message_id()
        send(messages.WORKER_HELLO, self.hello, msg_id=msg_id)
        self.joined, self.hello_id = True, msg_id

    def left(self) -> None:
        """A worker.stop: the pool let this worker go; it rejoins after a pause."""
        self.joined, self.rejoin_at = False, time.monotonic() + REJOIN_DELAY

    def answers_hello(self, re: Optional[str], body: Any) -> bool:
        """An ``error`` answering the hello: the node refused the join (recorded)."""
        if re is None or re != self.hello_id:
            return False
        body = body if isinstance(body, dict) else {}
        self.refusal = "the node refused to join PTS %s: %s: %s" % (
            self.hello["pts"], body.get("code"), body.get("message"))
        return True

    def refused_by(self, frames: List[bytes]) -> bool:
        """An unverifiable (unsigned) ``auth`` error answering the hello: the node refused this
        worker's signing key (recorded)."""
        refusal = read_refusal(frames)
        if refusal is None or not self.answers_hello(refusal.re, refusal.body):
            return False
        self.refusal += " (is --key-file the node's secret.key?)"
        return True

    def close(self) -> None:
        self.monitor.close(linger=0)
