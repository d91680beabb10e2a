"""One process's copy of the state the pnsweb processes of a port share.

Owns :class:`Replica`: the login back-off (:class:`pnsweb.throttle.LoginThrottle`) and the
console's sessions (:class:`pnsweb.console.sessions.Sessions`) of one process, with
:meth:`Replica.apply` for an event another process told (see :mod:`pnsweb.sharing` for the
kinds) and :meth:`Replica.export` / :meth:`Replica.load` for a whole copy (the hub keeps one and
hands it to each child that joins). Must not do I/O.
"""

from __future__ import annotations

from typing import Any

import structlog

from pnsweb.console.sessions import Session, Sessions
from pnsweb.throttle import LoginThrottle

log = structlog.get_logger(__name__)


class Replica:
    """A process's login back-off and console sessions, kept in step with the others'."""

    def __init__(self, throttle: LoginThrottle, sessions: Sessions) -> None:
        self.throttle = throttle
        self.sessions = sessions

    def apply(self, event: dict[str, Any]) -> None:
        """Apply another process's event; an unknown or malformed one is logged and ignored."""
        kind = event.get("kind")
        try:
            if kind == "login_failed":
                self.throttle.failed(str(event["client"]), str(event["name"]))
            elif kind == "login_succeeded":
                self.throttle.succeeded(str(event["client"]), str(event["name"]))
            elif kind == "session_opened":
                self.sessions.add(bytes.fromhex(event["mac"]),
                                  Session(str(event["user"]), float(event["expires"])))
            elif kind == "session_closed":
                self.sessions.drop(bytes.fromhex(event["mac"]))
            else:
                log.warning("shared_event_ignored", kind=kind, reason="unknown kind")
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("shared_event_ignored", kind=kind, reason=repr(exc))

    def export(self) -> dict[str, Any]:
        return {"throttle": self.throttle.export(), "sessions": self.sessions.export()}

    def load(self, copy: dict[str, Any]) -> None:
        self.throttle.load(copy["throttle"])
        self.sessions.load(copy["sessions"])
