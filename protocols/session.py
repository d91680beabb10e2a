"""The client library's sans-I/O core: encoding requests and reading replies.

Owns :class:`Session` (it encodes requests, refusing one over the size limit before it is
sent, decodes replies, turning a refused reply into an error for its caller, and turns
``error`` replies into typed :class:`RemoteError`) and the request's trace id. It owns no
socket: :mod:`protocols.client` does. Python 3.8 compatible.
"""

from __future__ import annotations

import contextvars
from typing import Any, Dict, List, Optional, Sequence, Tuple

from protocols.codec import Codec, Message, answered_id, new_message_id, read_refusal
from protocols.errors import ErrorCode, PnsError, ProtocolError, RemoteError
from protocols.messages import ERROR, reply_type, request_type

# The caller's request id (e.g. pnsweb's X-Request-ID): sent with every request made in this
# context, and bound by the daemon to the log lines of that request.
TRACE: "contextvars.ContextVar[Optional[str]]" = contextvars.ContextVar("pns_trace", default=None)


class Session:
    """Encoding and reply matching shared by both flavours; owns no socket."""

    def __init__(self, key: bytes, *, max_bytes: int, skew: float, local: bool = False,
                 take_unsigned: Optional[bool] = None) -> None:
        # Replies are matched against pending ids, so a replayed reply finds no caller; the
        # id memory of the replay guard is only needed on the daemon side.
        self.codec = Codec(key, max_bytes=max_bytes, skew=skew, guard_replay=False,
                           local=local, take_unsigned=take_unsigned)

    def request(self, op: str, body: Any) -> Tuple[str, List[bytes]]:
        """The id and frames of a request; raise RemoteError ``too_large`` rather than send
        a message the daemon would refuse (or its socket drop)."""
        msg_id = new_message_id()
        try:
            frames = self.codec.encode(request_type(op), body, msg_id=msg_id, trace=TRACE.get())
        except ProtocolError as exc:
            if exc.code != ErrorCode.TOO_LARGE:
                raise
            raise RemoteError(exc.code, "the %s request is not sent: %s" % (op, exc.message),
                              exc.details) from exc
        return msg_id, frames

    def read(self, frames: Sequence[bytes]) -> Optional[Message]:
        """Decode a reply; None for frames that answer nobody.

        An answer that fails our signature check may be the peer refusing our own signature
        (another key): that refusal is read unverified, so the caller learns why at once
        rather than by a timeout (only ``error`` answers of the pre-authentication codes,
        and only for an id the caller is waiting on; SPEC.md, "Refusals"). A reply refused
        for another reason (too large, stale) whose header names the request it answers
        becomes an error for that request's caller.
        """
        try:
            return self.codec.decode(frames)
        except ProtocolError as exc:
            if exc.code == ErrorCode.AUTH:
                return read_refusal(frames)
            re = answered_id(frames)
            if re is None:
                return None
            details = {k: v for k, v in exc.details.items() if k not in ("re", "type")}
            return failure(re, exc.code, "the reply was refused: %s" % exc.message, details)
        except PnsError:
            return None

    @staticmethod
    def outcome(op: str, message: Message) -> Any:
        """The reply's body, or raise the remote error it carries."""
        if message.type == ERROR:
            raise RemoteError.from_body(message.body)
        if message.type != reply_type(op):
            raise RemoteError(
                ErrorCode.MALFORMED, "expected %s, got %s" % (reply_type(op), message.type)
            )
        return message.body


def failure(re: str, code: str, text: str, details: Optional[Dict[str, Any]] = None) -> Message:
    """An ``error`` reply made here, for a request the daemon cannot answer any more."""
    return Message(ERROR, {"code": code, "message": text, "details": details or {}}, "", re, 0.0)


