"""PNS messages on a byte stream: the framing of the stdio worker transport.

A message's frames (the same frames as on ZeroMQ: marker, signature, header, body, blobs)
travel as one record: a 4-byte big-endian length of the rest of the record, then each frame as
a 4-byte big-endian length and its bytes (SPEC.md, "The stdio transport"). A stream has no way
to find the start of the next record once one is broken, so any breach of the layout is a
:class:`FramingError`: the stream (and the worker on it) is done for. Signatures and msgpack are
the codec's: this module only cuts bytes. Imports only the stdlib, and runs on Python 3.6 (the
stdio worker runtime does): no ``from __future__ import annotations`` here.
"""

import struct
from typing import Any, List, Sequence

MARKER = b"PNS"                 # frame 0 of every message, as in protocols.version.MAGIC
MIN_FRAMES = 4
LENGTH = struct.Struct(">I")
SLACK = 2 ** 20                 # a record may exceed the message limit by this much of lengths
_HEAD = LENGTH.size + LENGTH.size + len(MARKER)   # record length, marker length, marker
_SHOWN = 24                     # bytes of a broken record quoted in the error


class FramingError(Exception):
    """The stream breaks the record layout: nothing after this point can be read."""


def pack(frames: Sequence[bytes]) -> List[bytes]:
    """The pieces of one record, to be written in order (large frames are not copied)."""
    pieces = []     # type: List[bytes]
    total = 0
    for frame in frames:
        pieces.append(LENGTH.pack(len(frame)))
        pieces.append(frame)
        total += LENGTH.size + len(frame)
    return [LENGTH.pack(total), *pieces]


def pack_bytes(frames: Sequence[bytes]) -> bytes:
    return b"".join(pack(frames))


class FrameReader:
    """Cuts a stream fed in arbitrary chunks into messages (lists of frames).

    ``limit`` bounds a record's length (the message limit plus :data:`SLACK`): a longer one is
    refused as soon as its length is read, before anything is buffered.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()

    def pending(self) -> int:
        """Bytes of a record begun and not finished (a partial frame at the stream's end)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> List[List[bytes]]:
        """The messages that ``data`` completes; raise FramingError on a broken stream."""
        self._buffer += data
        messages = []    # type: List[List[bytes]]
        while True:
            size = record_size(self._buffer, 0, len(self._buffer), self.limit)
            end = LENGTH.size + size
            if size < 0 or len(self._buffer) < end:
                return messages
            whole, self._buffer = self._buffer, self._buffer[end:]
            with memoryview(whole) as view:   # each frame copied once, out of the buffer
                messages.append(split_record(view[LENGTH.size:end]))


def record_size(buffer: "bytes | bytearray | memoryview", start: int, end: int,
                limit: int) -> int:
    """The length of the record at ``buffer[start:end]``'s front, or -1 if not yet known;
    checks what it can of the record's start as soon as the bytes are there (FramingError)."""
    if end - start < LENGTH.size:
        return -1
    size = LENGTH.unpack_from(buffer, start)[0]
    if size > limit:
        raise FramingError("record of %d bytes over the limit of %d (garbage? it starts %r)"
                           % (size, limit, bytes(buffer[start:min(end, start + _SHOWN)])))
    head = bytes(buffer[start + LENGTH.size:min(end, start + _HEAD)])
    expected = (LENGTH.pack(len(MARKER)) + MARKER)[:len(head)]
    if head != expected or size < _HEAD - LENGTH.size:
        raise FramingError("record does not start with the PNS marker frame (garbage? "
                           "it starts %r)" % bytes(buffer[start:min(end, start + _SHOWN)]))
    return int(size)


def split_record(record: "bytes | memoryview", views: int = 0) -> List[Any]:
    """A record's frames; raise FramingError unless its frame lengths fill it exactly and
    it is a PNS message. With ``views``, frames of at least that many bytes are views of
    ``record`` rather than copies."""
    frames = split_frames(record, views)
    if len(frames) < MIN_FRAMES or frames[0] != MARKER:
        raise FramingError("record of %d frames is not a PNS message" % len(frames))
    return frames


def split_frames(record: "bytes | memoryview", views: int = 0) -> List[Any]:
    """A record's frames, whatever they hold; raise FramingError unless their lengths fill it
    exactly. With ``views``, frames of at least that many bytes are views of ``record``."""
    frames = []     # type: List[Any]
    offset, end = 0, len(record)
    while offset < end:
        if end - offset < LENGTH.size:
            raise FramingError("record ends inside a frame length")
        length = LENGTH.unpack_from(record, offset)[0]
        offset += LENGTH.size
        if length > end - offset:
            raise FramingError("frame of %d bytes overruns its record" % length)
        if views and length >= views:
            frames.append(record[offset:offset + length])
        else:
            frames.append(bytes(record[offset:offset + length]))
        offset += length
    return frames
