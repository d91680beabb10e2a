"""Message authentication: HMAC-SHA256 over every frame, and stale/replay rejection.

Owns the key and the memory of recently seen message ids. It never touches sockets or msgpack.
An empty key switches signing off (for tests only): the signature frame is then empty and any
signature is accepted. Python 3.6 compatible (the stdio worker runtime runs on 3.6); imports
nothing of ours.
"""

import hashlib
import hmac
import time
from typing import Any, Callable, Dict, Sequence, Set

from protocols.errors import ErrorCode, ProtocolError

Clock = Callable[[], float]


class Signer:
    """Signs and verifies a message's frames with one shared key (HMAC-SHA256, RFC 2104).

    The construction is spelled out over two pre-keyed SHA-256 states because copying them is
    cheaper per message than ``hmac.HMAC.copy()`` (bench/FINDINGS.md, "Micro-measurements"); a
    test checks it against ``hmac``.
    """

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.enabled = bool(key)
        block = hashlib.sha256(key).digest() if len(key) > 64 else key
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def sign(self, frames: Sequence[bytes]) -> bytes:
        if not self.enabled:
            return b""
        inner = self._inner.copy()
        for frame in frames:
            inner.update(frame)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def verify_either(self, signature: bytes, head: Sequence[Any], blobs: Sequence[Any]) -> bool:
        """Verify a message that has blob frames, signed over ``head`` alone (False: its blobs
        are unsigned) or over ``head`` and ``blobs`` (True); raise ``auth`` if neither.

        One pass over the bytes either way: the state after ``head`` is compared, then
        carried on over the blobs.
        """
        if not self.enabled:
            return True
        if not signature:
            raise ProtocolError(ErrorCode.AUTH,
                                "message is not signed (the receiver requires a key)")
        inner = self._inner.copy()
        for frame in head:
            inner.update(frame)
        if hmac.compare_digest(signature, self._finish(inner.copy())):
            return False
        for frame in blobs:
            inner.update(frame)
        if hmac.compare_digest(signature, self._finish(inner)):
            return True
        raise ProtocolError(ErrorCode.AUTH,
                            "bad message signature (the sender's key is not the receiver's)")

    def _finish(self, inner: Any) -> bytes:
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def verify(self, signature: bytes, frames: Sequence[bytes]) -> None:
        if not self.enabled:
            return
        if not signature:
            raise ProtocolError(ErrorCode.AUTH,
                                "message is not signed (the receiver requires a key)")
        if not hmac.compare_digest(signature, self.sign(frames)):
            raise ProtocolError(ErrorCode.AUTH,
                                "bad message signature (the sender's key is not the receiver's)")


class ReplayGuard:
    """Refuses messages whose timestamp is outside the window or whose id was seen within it.

    A message is acceptable while ``|now - ts| <= window``, that is until ``ts + window``: up to
    two windows after it arrives when it was stamped a window ahead. Its id is remembered until
    then, so a copy is refused as replayed for as long as it is not refused as stale. Ids are
    kept in buckets by the window in which they may be forgotten: memory stays bounded by the
    ids that arrive within two windows, a lookup costs at most three set lookups, and a whole
    bucket is dropped at once when its last id expires. Buckets expire only as the clock
    crosses into the next span, so they are swept once per span, not per message.
    """

    def __init__(self, window: float, *, clock: Clock = time.time) -> None:
        self.window = window
        self.clock = clock
        self._span = window if window > 0 else 1.0     # a bucket covers one window of expiries
        self._buckets: Dict[int, Set[str]] = {}
        self._next_sweep = float("-inf")    # when the oldest bucket may have expired

    def check(self, msg_id: str, ts: float, *, remember: bool = True) -> None:
        now = self.clock()
        if not abs(now - ts) <= self.window:    # written so that a NaN is refused too
            raise ProtocolError(
                ErrorCode.REPLAY,
                "stale message: timestamp %.3f is %.1f s off the receiver's clock" % (ts, ts - now),
            )
        if not remember:
            return
        if now >= self._next_sweep:
            self._forget_expired(now)
        for seen in self._buckets.values():
            if msg_id in seen:
                raise ProtocolError(ErrorCode.REPLAY, "replayed message id %s" % msg_id)
        bucket = int((ts + self.window) // self._span)
        self._buckets.setdefault(bucket, set()).add(msg_id)

    def remembered(self) -> int:
        """How many ids are held (for tests and figures)."""
        return sum(len(seen) for seen in self._buckets.values())

    def _forget_expired(self, now: float) -> None:
        """Drop the buckets whose every id expired: bucket k holds expiries before (k+1)*span."""
        current = int(now // self._span)
        for bucket in [k for k in self._buckets if k < current]:
            del self._buckets[bucket]
        self._next_sweep = (current + 1) * self._span
