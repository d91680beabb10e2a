"""CURVE security of the daemon's TCP endpoints: key pairs, authorised keys and the ZAP handler.

Owns the on-disk layout of CURVE keys under the home (``curve_dir``, by default ``curve/``)::

    server.key, server.key_secret   the node's key pair (made on first use)
    clients/NAME.key                public keys of clients allowed on tcp_endpoint
    workers/NAME.key                public keys of remote workers allowed on worker_endpoint

making key pairs (``pnsd keys new``), the ZAP handler (pyzmq's ``AsyncioAuthenticator`` with a
credentials callback per domain: ``clients``, ``workers``), making a ROUTER a CURVE server of
one domain, and watching a secured socket for failed handshakes. An unknown key and a failed
handshake are counted in the server's refusals (codes ``curve_key`` and ``curve_handshake``)
and logged there. Must not decode messages or know of PTS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import structlog
import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils.monitor import parse_monitor_message

from pnsd.errors import ConfigError
from pnsd.refusals import Refusals
from protocols.pump import Pump

log = structlog.get_logger(__name__)

DOMAINS = ("clients", "workers")
SERVER = "server"
_FAILED = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


def ensure_server_pair(directory: Path) -> tuple[bytes, bytes]:
    """The node's (public, secret) key, made on first use. Blocking: call it in a thread."""
    secret_file = directory / f"{SERVER}.key_secret"
    if not secret_file.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for domain in DOMAINS:
            (directory / domain).mkdir(mode=0o700, parents=True, exist_ok=True)
        _create_pair(directory, SERVER)
        log.info("curve_server_key_created", path=str(directory / f"{SERVER}.key"))
    public, secret = zmq.auth.load_certificate(str(secret_file))
    if secret is None:
        raise ConfigError(f"{secret_file} holds no secret key")
    return public, secret


def new_key_pair(directory: Path, name: str, *, role: str, out: Path) -> tuple[Path, Path]:
    """Make NAME's key pair in ``out`` and authorise its public key for ``role`` (a domain).

    Returns the public and secret key files; the secret one goes to the client or worker
    machine, never stays on the node. Blocking.
    """
    if role not in DOMAINS:
        raise ConfigError(f"role must be one of {', '.join(DOMAINS)}")
    if not name or "/" in name or name.startswith(".") or name == SERVER:
        raise ConfigError(f"bad key name {name!r}")
    ensure_server_pair(directory)
    authorised = directory / role / f"{name}.key"
    public, secret = out / f"{name}.key", out / f"{name}.key_secret"
    for path in (authorised, public, secret):
        if path.exists():
            raise ConfigError(f"{path} exists already: remove it first or pick another name")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    _create_pair(out, name)
    shutil.copyfile(public, authorised)
    return public, secret


def list_keys(directory: Path) -> dict[str, list[str]]:
    """The authorised key names by domain. Blocking."""
    return {domain: sorted(p.stem for p in (directory / domain).glob("*.key"))
            for domain in DOMAINS}


def _create_pair(directory: Path, name: str) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _public, secret = zmq.auth.create_certificates(str(directory), name)
    os.chmod(secret, 0o600)


class KeyRing:
    """The authorised public keys (z85) of each domain, read again when a directory changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._keys: dict[str, frozenset[bytes]] = {domain: frozenset() for domain in DOMAINS}
        self._stamps: dict[str, float] = {}

    def refresh(self) -> None:
        """Read each domain's directory again if it changed since. Blocking."""
        for domain in DOMAINS:
            folder = self.directory / domain
            try:
                stamp = folder.stat().st_mtime
            except FileNotFoundError:
                self._keys[domain], self._stamps[domain] = frozenset(), 0.0
                continue
            if self._stamps.get(domain) != stamp:
                self._keys[domain] = frozenset(zmq.auth.load_certificates(str(folder)))
                self._stamps[domain] = stamp

    def allows(self, domain: str, key: bytes) -> bool:
        return key in self._keys.get(domain, frozenset())


class _Authenticator(AsyncioAuthenticator):
    """pyzmq's ZAP handler; it notes each request's peer address for the refusal line."""

    address = ""

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self.address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
        await super().handle_zap_message(msg)


class CurveGuard:
    """The ZAP handler of one daemon and the CURVE servers it secures."""

    def __init__(self, context: zmq.Context[Any], directory: Path, refusals: Refusals) -> None:
        self.directory = directory
        self.ring = KeyRing(directory)
        self.refusals = refusals
        self._context = context
        self._auth: _Authenticator | None = None
        self._public = self._secret = b""
        self._monitors: list[tuple[zmq.Socket[bytes], Pump]] = []

    async def start(self) -> None:
        self._public, self._secret = await asyncio.to_thread(ensure_server_pair, self.directory)
        await asyncio.to_thread(self.ring.refresh)
        auth = self._auth = _Authenticator(self._context)
        auth.start()
        for domain in DOMAINS:
            auth.configure_curve_callback(domain, self)

    @property
    def public_key(self) -> bytes:
        return self._public

    async def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: whether ``key`` may connect to ``domain`` (a new key file counts at once)."""
        if self.ring.allows(domain, key):
            return True
        await asyncio.to_thread(self.ring.refresh)
        if self.ring.allows(domain, key):
            return True
        address = self._auth.address if self._auth is not None else ""
        self.refusals.count("curve_key", f"unknown CURVE key for {domain}", domain=domain,
                            key=key.decode("ascii", "replace"), peer=address)
        return False

    def secure(self, socket: zmq.Socket[bytes], domain: str) -> None:
        """Make ``socket`` (before it binds) a CURVE server of ``domain``, watched for failed
        handshakes."""
        socket.curve_secretkey = self._secret
        socket.curve_publickey = self._public
        socket.curve_server = True
        socket.zap_domain = domain.encode()
        monitor: zmq.Socket[bytes] = socket.get_monitor_socket(_FAILED)
        self._monitors.append((socket, Pump(monitor, lambda frames: self._failed(frames,
                                                                                  domain))))

    def _failed(self, frames: list[bytes], domain: str) -> None:
        event = parse_monitor_message(frames)
        self.refusals.count("curve_handshake", "CURVE handshake failed (wrong server key, or "
                            "a peer not speaking CURVE)", domain=domain,
                            handshake=zmq.Event(event["event"]).name)

    def stop(self) -> None:
        for socket, pump in self._monitors:
            pump.close()
            if not socket.closed:
                socket.disable_monitor()
        self._monitors.clear()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
