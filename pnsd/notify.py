"""Telling a service manager (systemd's ``Type=notify``) that the daemon is ready or stopping.

Owns the sd_notify datagram: one line such as ``READY=1`` sent to the unix socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` names an abstract socket). Without that variable nothing is
sent. It must not decide when the daemon is ready: :mod:`pnsd.daemon` calls it.
"""

from __future__ import annotations

import os
import socket

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Sends states to the socket ``$NOTIFY_SOCKET`` named when the daemon started.

    The variable is taken out of the environment, so the children the daemon starts (whose
    environment is built from the daemon's) never speak for it.
    """

    def __init__(self) -> None:
        self.address = os.environ.pop("NOTIFY_SOCKET", "")

    def send(self, state: str) -> bool:
        """Send ``state`` (``"READY=1"``, ``"STOPPING=1"``...); False if nobody listens."""
        if not self.address:
            return False
        address = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(1.0)     # a local datagram: never waits in practice
                sock.connect(address)
                sock.sendall(state.encode())
        except OSError as exc:
            log.warning("notify_failed", socket=self.address, state=state, error=str(exc))
            return False
        return True
