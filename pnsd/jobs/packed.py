"""A value's msgpack form, with its large byte strings left where they are.

Owns :func:`pack` (the form the store keeps inputs and results in) and :class:`Packed`, that
form as a list of segments: small packed pieces, and between them each large ``bytes`` (or
``memoryview`` of a received frame) value as it is, never copied into one buffer. Joined,
the segments are exactly ``msgpack.packb(value, use_bin_type=True)``; the store writes them
to a file one after the other. It must not write anything itself.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from pnsd.errors import PtsFailed
from protocols.codec import BLOB_THRESHOLD, BLOB_TYPES, QUICK_DEPTH, has_big_bytes
from protocols.utf8 import utf8

__all__ = ["Packed", "pack", "unpack"]

_BIN32 = struct.Struct(">BI")     # msgpack bin 32 (0xc6) or str 32 (0xdb), then the length


def encoded(segment: Any) -> Any:
    """A segment as bytes to write: a large str is encoded only now (by the writer), and an
    ASCII one not at all (:func:`protocols.utf8.utf8`)."""
    return utf8(segment) if isinstance(segment, str) else segment


def _length(segment: Any) -> int:
    if isinstance(segment, str):
        return len(segment) if segment.isascii() else len(segment.encode("utf-8"))
    return len(segment)


class Packed:
    """The segments of one value's msgpack form; ``len`` is the form's length."""

    __slots__ = ("segments", "size", "source")

    def __init__(self, segments: list[Any], source: Any = None) -> None:
        self.segments = segments     # bytes-like, or a large str (written as its UTF-8)
        self.size = sum(_length(segment) for segment in segments)
        self.source = source        # the value packed (an echo's result is its input)

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        return b"".join(encoded(segment) for segment in self.segments)

    def same_as(self, other: Packed) -> bool:
        """True when both are the form of the very same large values (an echo's result is
        its input): the store then keeps one file for both. Compares identities and the
        small pieces only, never the large bytes."""
        if self.source is not None and self.source is other.source:
            return True
        if len(self.segments) != len(other.segments) or self.size != other.size:
            return False
        for mine, theirs in zip(self.segments, other.segments, strict=True):
            if mine is not theirs and (_length(mine) >= BLOB_THRESHOLD or mine != theirs):
                return False
        return True


def pack(value: Any) -> bytes | Packed:
    """``value``'s msgpack form: ``bytes``, or :class:`Packed` when it holds a large byte
    string (found near the top at once, or deeper once the plain form came out large)."""
    try:
        if has_big_bytes(value, QUICK_DEPTH):
            return _segmented(value)
        blob: bytes = msgpack.packb(value, use_bin_type=True)
        if len(blob) >= BLOB_THRESHOLD and has_big_bytes(value):
            return _segmented(value)
        return blob
    except (TypeError, ValueError, OverflowError) as exc:
        raise PtsFailed(f"the PTS returned a value that cannot be encoded: {exc}") from exc


def unpack(blob: bytes) -> Any:
    return msgpack.unpackb(blob, raw=False, strict_map_key=False)


def _segmented(value: Any) -> Packed:
    segments: list[Any] = []
    _add(msgpack.Packer(use_bin_type=True), value, segments)
    return Packed(segments, value)


def _add(packer: Any, value: Any, segments: list[Any]) -> None:
    """Append ``value``'s form: a large byte string as a bin header and itself; a map or list
    holding one as its header and its items; anything else packed whole."""
    if isinstance(value, BLOB_TYPES) and len(value) >= BLOB_THRESHOLD:
        segments.append(_BIN32.pack(0xC6, len(value)))
        segments.append(value)
    elif isinstance(value, str) and len(value) >= BLOB_THRESHOLD:   # >= 64 KiB of UTF-8
        segments.append(_BIN32.pack(0xDB, _length(value)))
        segments.append(value)
    elif isinstance(value, dict) and has_big_bytes(value):
        segments.append(packer.pack_map_header(len(value)))
        for key, item in value.items():
            segments.append(packer.pack(key))
            _add(packer, item, segments)
    elif isinstance(value, list) and has_big_bytes(value):
        segments.append(packer.pack_array_header(len(value)))
        for item in value:
            _add(packer, item, segments)
    else:
        segments.append(packer.pack(value))
