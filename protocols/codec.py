"""Framing and encoding of PNS messages (see SPEC.md, "Frames").

A message is the frame list ``[MAGIC, signature, header, body, blob...]``: header and body are
msgpack, blobs are raw byte frames that large ``bytes`` values of the body travel in (so they
are sent zero-copy and never packed). Owns encoding, decoding, the size limit (checked on both:
a message over it is never sent, so no peer's socket has to drop it), the signing rule of blob
frames (a ``local`` codec, for ``ipc://`` and a worker's pipes, leaves them out of the signature
and puts their lengths in the signed header; SPEC.md, "Blob frames on ipc://") and the calls to
:mod:`protocols.signing`; it never touches a socket. A received blob may be a ``memoryview``
of the ZeroMQ frame (:func:`protocols.pump.recv_frames`): decoding hands it on as it is when
``views`` is set, else as ``bytes``. Python 3.6 compatible (the stdio worker runtime runs on
3.6).
"""

import itertools
import math
import os
import struct
import time
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import msgpack

from protocols.errors import ErrorCode, ProtocolError
from protocols.signing import Clock, ReplayGuard, Signer
from protocols.utf8 import utf8
from protocols.version import MAGIC, PROTOCOL_VERSION

BLOB_EXT = 1                    # msgpack ext type: a reference to blob frame number N
TEXT_EXT = 2                    # ... to blob frame N holding a string's UTF-8 bytes
BLOB_THRESHOLD = 64 * 1024      # bytes (and str) values at least this long travel as blobs
DEFAULT_MAX_BYTES = 64 * 2**20
MAX_HEADER_BYTES = 1024         # a valid header (three strings of at most 64) is far shorter
# The codes that refuse a message before it is authenticated: their answers go out unsigned.
UNAUTHENTICATED_REFUSALS = frozenset([ErrorCode.AUTH, ErrorCode.TOO_LARGE])
_INDEX = struct.Struct(">I")
SIGNATURE_BYTES = 32            # HMAC-SHA256
BLOB_TYPES = (bytes, bytearray, memoryview)   # byte strings that may travel as blob frames
# How deep pack_body looks for a large byte string before packing: a run's input or result,
# a task's data; a body's small values are not walked further (that costs every message).
QUICK_DEPTH = 2
_BIG_TYPES = (*BLOB_TYPES, str)   # the values that travel as blob frames when large
_CONTAINERS = (dict, list)


class Message(NamedTuple):
    type: str
    body: Any
    id: str
    re: Optional[str]
    ts: float
    v: int = PROTOCOL_VERSION
    trace: Optional[str] = None   # a caller-chosen id tying the daemon's log lines to a request


# Message ids: a random per-process prefix and a counter, cheaper than a random draw per id.
# 16 random hex characters make two processes' ids collide with negligible probability; a forked
# child draws a prefix of its own.
_id_prefix = ""
_id_counter = itertools.count()


def _reseed_ids() -> None:
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = os.urandom(8).hex(), itertools.count()


_reseed_ids()
if hasattr(os, "register_at_fork"):     # Python 3.7+; the stdio runtime never forks
    os.register_at_fork(after_in_child=_reseed_ids)


def new_message_id() -> str:
    return _id_prefix + format(next(_id_counter), "016x")


class Codec:
    """Turns messages into signed frames and back, enforcing the receiver's limits."""

    def __init__(
        self,
        key: bytes = b"",
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        skew: float = 60.0,
        clock: Clock = time.time,
        guard_replay: bool = True,
        local: bool = False,
        views: bool = False,
        take_unsigned: Optional[bool] = None,
    ) -> None:
        self.signer = Signer(key)
        # ipc:// only: blob frames go (and are taken) unsigned, their lengths in the header.
        # A peer may send signed blobs on ipc:// and still take unsigned ones (take_unsigned).
        self.local = local
        self.take_unsigned = local if take_unsigned is None else take_unsigned
        self.views = views      # blobs decoded as the memoryviews received, not copied
        self.max_bytes = max_bytes
        self.clock = clock
        self.guard = ReplayGuard(skew, clock=clock)
        self.guard_replay = guard_replay
        # One packer per codec: a Codec belongs to one thread (like the socket it feeds).
        self._packer = _new_packer()

    def encode(
        self,
        msg_type: str,
        body: Any = None,
        *,
        re: Optional[str] = None,
        msg_id: Optional[str] = None,
        ts: Optional[float] = None,
        trace: Optional[str] = None,
    ) -> List[Any]:
        """The frames of one message (ROUTER identities not included); blobs are the values
        themselves (``bytes`` or ``memoryview``), never copied.

        Raise ProtocolError ``too_large`` (details ``size``, ``limit``) for a message over
        ``max_bytes``: the receiver would refuse it, or its socket drop the connection.
        """
        blobs: List[Any] = []
        packed = pack_body(self._packer, body, blobs)
        if blobs or len(packed) >= BLOB_THRESHOLD:
            # A Packer keeps the largest buffer it ever needed: after a large body, a fresh
            # one, rather than pin up to twice that body's size for the codec's lifetime.
            self._packer = _new_packer()
        fields = [PROTOCOL_VERSION, msg_id or new_message_id(), msg_type, re,
                  self.clock() if ts is None else ts]
        if trace or (blobs and self.local):
            fields.append(trace[:64] if trace else None)
        if blobs and self.local:    # the signature covers these lengths, not the blobs
            fields.append([len(blob) for blob in blobs])
        header = self._packer.pack(fields)
        size = len(MAGIC) + len(header) + len(packed)
        size += SIGNATURE_BYTES if self.signer.enabled else 0
        for blob in blobs:
            size += len(blob)
        if size > self.max_bytes:
            raise too_large(size, self.max_bytes)
        signed = [MAGIC, header, packed] if self.local else [MAGIC, header, packed, *blobs]
        return [MAGIC, self.signer.sign(signed), header, packed, *blobs]

    def decode(self, frames: Sequence[bytes]) -> Message:
        """Check and decode frames; raise ProtocolError with the code to answer with.

        The size and the signature are checked first, before anything is decoded, so that
        refusing a forged or unsigned message costs one hash at most. Once the message is
        authenticated, an error's details carry ``re`` (the message id) and ``type``; an error
        without ``re`` refuses a message nobody is known to have sent (see
        :func:`message_id`).
        """
        if len(frames) < 4 or frames[0] != MAGIC:
            raise ProtocolError(ErrorCode.MALFORMED, "not a PNS message (bad frame layout)")
        blobs_signed = self.authenticate(frames)
        version, msg_id, msg_type, re, ts, trace, lengths = read_header(frames[2])
        try:
            check_blobs(frames[4:], lengths, blobs_signed)
            if version != PROTOCOL_VERSION:
                raise ProtocolError(
                    ErrorCode.VERSION,
                    "protocol version %r not supported (this peer speaks %d)"
                    % (version, PROTOCOL_VERSION),
                )
            if self.signer.enabled:
                self.guard.check(msg_id, ts, remember=self.guard_replay)
            body = unpack_body(frames[3], frames[4:], views=self.views)
        except ProtocolError as exc:
            exc.details.update({"re": msg_id, "type": msg_type})
            raise
        return Message(msg_type, body, msg_id, re, ts, version, trace)

    def authenticate(self, frames: Sequence[Any]) -> bool:
        """The size limit and the signature: the checks that need no decoding. True when the
        signature covers the blob frames too; False when it covers marker, header and body
        only (a ``local`` codec's message: :func:`check_blobs` then holds the blobs to the
        lengths in the signed header). A non-local codec refuses the latter (``auth``)."""
        size = 0
        for frame in frames:
            size += len(frame)
        if size > self.max_bytes:
            raise too_large(size, self.max_bytes)
        if len(frames) == 4:
            self.signer.verify(frames[1], (MAGIC, frames[2], frames[3]))
            return True
        if self.signer.verify_either(frames[1], (MAGIC, frames[2], frames[3]), frames[4:]):
            return True
        if not self.take_unsigned:
            raise ProtocolError(ErrorCode.AUTH, "unsigned blob frames are taken on ipc:// only")
        return False


def message_id(frames: Sequence[bytes]) -> Optional[str]:
    """The id in a message's header, if it can be read; None otherwise (never raises).

    For answering a message refused before it was authenticated: the id is the sender's claim.
    """
    if len(frames) < 4 or frames[0] != MAGIC:
        return None
    try:
        return read_header(frames[2])[1]
    except ProtocolError:
        return None


def answered_id(frames: Sequence[bytes]) -> Optional[str]:
    """The ``re`` in a message's header (the id of the request it answers), if it can be read;
    None otherwise (never raises). For failing the caller of a reply that was refused."""
    if len(frames) < 4 or frames[0] != MAGIC:
        return None
    try:
        return read_header(frames[2])[3]
    except ProtocolError:
        return None


def read_refusal(frames: Sequence[bytes]) -> Optional[Message]:
    """An ``error`` answering a message of ours that the peer refused as unauthenticated.

    Such an answer cannot be verified (the peer refused our signature, so our key is not its
    key), and it is sent unsigned (SPEC.md, "Refusals"). Only the codes that refuse a message
    before its authentication are taken, and the caller must match ``re`` to a request it
    made; anything else is None.
    """
    if len(frames) != 4 or frames[0] != MAGIC:
        return None
    try:
        version, msg_id, msg_type, re, ts, trace, _lengths = read_header(frames[2])
        body = unpack_body(frames[3], ())
    except ProtocolError:
        return None
    if (msg_type != "error" or re is None or not isinstance(body, dict)
            or body.get("code") not in UNAUTHENTICATED_REFUSALS):
        return None
    return Message(msg_type, body, msg_id, re, ts, version, trace)


def too_large(size: int, limit: int) -> ProtocolError:
    return ProtocolError(
        ErrorCode.TOO_LARGE, "message of %d bytes exceeds the limit of %d" % (size, limit),
        {"size": size, "limit": limit},
    )


Header = Tuple[int, str, str, Optional[str], float, Optional[str], Optional[List[int]]]


def read_header(frame: Any) -> Header:
    """The header array ``[v, id, type, re, ts]`` (+ optional ``trace``, then optional blob
    lengths), checked."""
    if len(frame) > MAX_HEADER_BYTES:
        raise ProtocolError(ErrorCode.MALFORMED, "header of %d bytes is too long" % len(frame))
    try:
        header = msgpack.unpackb(frame, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(ErrorCode.MALFORMED, "header is not msgpack: %s" % exc) from exc
    if not isinstance(header, list) or len(header) not in (5, 6, 7):
        raise ProtocolError(ErrorCode.MALFORMED, "header is not an array of 5 to 7 fields")
    version, msg_id, msg_type, re, ts = header[:5]
    trace = header[5] if len(header) >= 6 else None
    lengths = header[6] if len(header) == 7 else None
    ok = (
        type(version) is int
        and isinstance(msg_id, str) and 0 < len(msg_id) <= 64
        and isinstance(msg_type, str) and 0 < len(msg_type) <= 64
        and (re is None or isinstance(re, str))
        and type(ts) in (int, float) and math.isfinite(ts)
        and (trace is None or (isinstance(trace, str) and len(trace) <= 64))
        and (lengths is None or (isinstance(lengths, list)
                                 and all(type(n) is int and n >= 0 for n in lengths)))
    )
    if not ok:
        raise ProtocolError(ErrorCode.MALFORMED, "header lacks a valid v, id, type, re or ts")
    return version, msg_id, msg_type, re, float(ts), trace, lengths


def check_blobs(blobs: Sequence[Any], lengths: Optional[List[int]], signed: bool) -> None:
    """Blob frames left out of the signature must be exactly those the signed header lists:
    as many, each of its length (a frame cut, padded, added or dropped on the way is refused,
    ``malformed``, before anything is decoded)."""
    if lengths is None:
        if not signed:
            raise ProtocolError(ErrorCode.MALFORMED,
                                "unsigned blob frames without their lengths in the header")
        return
    if len(blobs) != len(lengths):
        raise ProtocolError(ErrorCode.MALFORMED, "%d blob frames; the signed header lists %d"
                            % (len(blobs), len(lengths)),
                            {"frames": len(blobs), "expected": len(lengths)})
    for index, length in enumerate(lengths):
        if len(blobs[index]) != length:
            raise ProtocolError(ErrorCode.MALFORMED,
                                "blob frame %d is %d bytes; the signed header says %d"
                                % (index, len(blobs[index]), length),
                                {"blob": index, "size": len(blobs[index]), "expected": length})


def _new_packer() -> Any:
    return msgpack.Packer(use_bin_type=True, default=_encode_default)


def _encode_default(obj: Any) -> Any:
    if isinstance(obj, (bytearray, memoryview)):
        return bytes(obj)
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    raise TypeError("cannot encode %s" % type(obj).__name__)


def pack_body(packer: Any, body: Any, blobs: List[Any]) -> bytes:
    """msgpack the body; large bytes values are appended to ``blobs`` and referenced.

    Packed once: a body with a large bytes value near its top (a run's input or result) is
    packed with references straight away; any other is packed as it is, and again with
    references only if it came out large and holds a large bytes value deeper down.
    """
    try:
        if has_big_bytes(body, QUICK_DEPTH):
            return packer.pack(_with_blob_refs(body, blobs))  # type: ignore[no-any-return]
        packed: bytes = packer.pack(body)
        if len(packed) >= BLOB_THRESHOLD and has_big_bytes(body):
            packed = packer.pack(_with_blob_refs(body, blobs))
    except (TypeError, ValueError, OverflowError) as exc:
        packer.reset()
        raise ProtocolError(ErrorCode.BAD_REQUEST, "body cannot be encoded: %s" % exc) from exc
    return packed


def _with_blob_refs(value: Any, blobs: List[Any]) -> Any:
    """``value`` with each large bytes value appended to ``blobs`` and replaced by a reference.

    A module function on purpose: a recursive closure is a reference cycle, which kept every
    large message's blobs alive until the cyclic garbage collector ran (in an idle daemon, for
    good: 207 MB after ten 16 MiB runs).
    """
    if isinstance(value, BLOB_TYPES) and len(value) >= BLOB_THRESHOLD:
        blobs.append(value)
        return msgpack.ExtType(BLOB_EXT, _INDEX.pack(len(blobs) - 1))
    if isinstance(value, str) and len(value) >= BLOB_THRESHOLD:
        blobs.append(utf8(value))     # an ASCII string's own bytes: not copied
        return msgpack.ExtType(TEXT_EXT, _INDEX.pack(len(blobs) - 1))
    if isinstance(value, dict):
        return {k: _with_blob_refs(v, blobs) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_blob_refs(v, blobs) for v in value]
    return value


def has_big_bytes(value: Any, limit: int = 32, depth: int = 0) -> bool:
    """True if a bytes (or str) value of at least BLOB_THRESHOLD sits in ``value`` (maps and
    lists) no deeper than ``limit`` levels. Every body is walked: a container's scalars are
    judged in its own loop, not by a call each (bench/FINDINGS.md, "Blob detection")."""
    if not isinstance(value, _CONTAINERS):
        return isinstance(value, _BIG_TYPES) and len(value) >= BLOB_THRESHOLD
    items = value.values() if isinstance(value, dict) else value  # type: Any
    if depth >= limit:      # deeper than any real body: let msgpack judge it
        return False
    for item in items:
        if isinstance(item, _CONTAINERS):
            if has_big_bytes(item, limit, depth + 1):
                return True
        elif isinstance(item, _BIG_TYPES) and len(item) >= BLOB_THRESHOLD:
            return True
    return False


def _no_blobs(code: int, data: bytes) -> Any:
    raise ProtocolError(ErrorCode.MALFORMED, "msgpack extension %d without blob frames" % code)


def unpack_body(frame: Any, blobs: Sequence[Any], *, views: bool = False) -> Any:
    """The body, each blob reference replaced by its frame: a text blob by its string (decoded
    straight from the frame), a bytes blob by ``bytes`` (a copy of a received view), or by the
    view itself when ``views``."""
    if not blobs:
        try:
            return msgpack.unpackb(frame, raw=False, strict_map_key=False, ext_hook=_no_blobs)
        except ProtocolError:
            raise
        except Exception as exc:  # msgpack raises several unrelated types on garbage
            raise ProtocolError(ErrorCode.MALFORMED, "body is not msgpack: %s" % exc) from exc

    def ext_hook(code: int, data: bytes) -> Any:
        if code not in (BLOB_EXT, TEXT_EXT) or len(data) != 4:
            raise ProtocolError(ErrorCode.MALFORMED, "unknown msgpack extension %d" % code)
        index = _INDEX.unpack(data)[0]
        if index >= len(blobs):
            raise ProtocolError(ErrorCode.MALFORMED, "blob reference %d out of range" % index)
        blob = blobs[index]
        if code == BLOB_EXT:
            return blob if views or isinstance(blob, bytes) else bytes(blob)
        try:
            return str(blob, "utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(ErrorCode.MALFORMED,
                                "text blob %d is not UTF-8: %s" % (index, exc)) from exc

    try:
        return msgpack.unpackb(frame, raw=False, strict_map_key=False, ext_hook=ext_hook)
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise ProtocolError(ErrorCode.MALFORMED, "body is not msgpack: %s" % exc) from exc
