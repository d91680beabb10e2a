"""The stream door's record reader and writer (protocols.streamlink), without a socket.

The reader is fed the way asyncio's BufferedProtocol feeds it: bytes are copied into the buffer
it hands out, in chunks of whatever size the kernel returns. Whatever the chunking, it must
give back exactly the messages written, refuse a broken stream as soon as it can tell, and read
a large record into a buffer of its own (its large frames views of it, not copies).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.stdioframe import MARKER, FramingError, pack_bytes
from protocols.streamlink import SCRATCH, VIEW_FROM, RecordReader, record_pieces

LIMIT = 8 * 2**20


def feed(reader: RecordReader, stream: bytes, chunks: list[int]) -> list[list[Any]]:
    """Copy ``stream`` into the reader's buffers, ``chunks`` bytes at a time (cycled), as the
    event loop would; the messages it completes."""
    messages: list[list[Any]] = []
    offset, turn = 0, 0
    while offset < len(stream):
        buffer = reader.buffer()
        assert len(buffer) > 0
        size = min(len(buffer), chunks[turn % len(chunks)], len(stream) - offset)
        buffer[:size] = stream[offset:offset + size]
        offset += size
        turn += 1
        messages.extend(reader.received(size))
    return messages


def message(*rest: bytes) -> list[bytes]:
    """Frames shaped like a PNS message (the reader checks the marker and the count only)."""
    return [MARKER, b"", b"header", *rest]


frames_st = st.lists(st.binary(max_size=300), min_size=1, max_size=4).map(
    lambda rest: message(*rest))


@settings(max_examples=200, deadline=None)
@given(st.lists(frames_st, min_size=1, max_size=20),
       st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=8))
def test_any_chunking_gives_back_the_messages_written(
        messages: list[list[bytes]], chunks: list[int]) -> None:
    stream = b"".join(pack_bytes(frames) for frames in messages)
    got = feed(RecordReader(LIMIT), stream, chunks)
    assert [[bytes(frame) for frame in frames] for frames in got] == messages


@pytest.mark.parametrize("chunk", [1000, 65536, 256 * 1024, 10**9])
def test_a_large_record_is_read_into_its_own_buffer_and_its_large_frames_are_views(
        chunk: int) -> None:
    blob = os.urandom(3 * SCRATCH + 17)
    small = message(b"body")
    large = message(b"body", blob, b"tail")
    stream = pack_bytes(small) + pack_bytes(large) + pack_bytes(small)
    reader = RecordReader(LIMIT)
    got = feed(reader, stream, [chunk])
    assert len(got) == 3
    assert [bytes(frame) for frame in got[1]] == large
    assert isinstance(got[1][4], memoryview)          # the blob: a view, not a copy
    assert all(isinstance(frame, bytes) for frame in got[1][:4] + got[1][5:])
    assert got[0] == small and got[2] == small
    assert reader.pending() == 0


def test_records_straddling_the_scratch_buffer_are_moved_not_lost() -> None:
    # many records just under the view size fill the scratch over and over, each split at
    # a different place
    records = [message(bytes([n % 256]) * (VIEW_FROM - 100 + n)) for n in range(40)]
    stream = b"".join(pack_bytes(frames) for frames in records)
    got = feed(RecordReader(LIMIT), stream, [SCRATCH // 3 + 1])
    assert [[bytes(frame) for frame in frames] for frames in got] == records


def test_a_record_over_the_limit_is_refused_as_soon_as_its_length_is_read() -> None:
    reader = RecordReader(1024)
    stream = pack_bytes(message(b"x" * 2048))
    buffer = reader.buffer()
    buffer[:4] = stream[:4]
    with pytest.raises(FramingError, match="over the limit"):
        reader.received(4)


@pytest.mark.parametrize("garbage", [b"hello world\n", b"\x00\x00\x00\x10\x00\x00\x00\x03XYZ"])
def test_a_stream_that_is_not_pns_records_is_refused_at_its_first_bytes(garbage: bytes) -> None:
    with pytest.raises(FramingError):
        feed(RecordReader(LIMIT), garbage, [len(garbage)])


def test_frame_lengths_that_do_not_fill_the_record_break_the_stream() -> None:
    record = bytearray(pack_bytes(message(b"body")))
    record[-5] += 1     # the body frame's length overruns the record
    with pytest.raises(FramingError, match="overruns"):
        feed(RecordReader(LIMIT), bytes(record), [7])


def test_a_partial_record_is_pending() -> None:
    stream = pack_bytes(message(b"body" * 100))
    reader = RecordReader(LIMIT)
    assert feed(reader, stream[:-10], [50]) == []
    assert reader.pending() == len(stream) - 10


@given(st.lists(st.sampled_from([0, 10, VIEW_FROM - 1, VIEW_FROM, 3 * VIEW_FROM]),
                min_size=1, max_size=6))
@settings(max_examples=50, deadline=None)
def test_the_pieces_written_are_the_record_with_large_frames_uncopied(sizes: list[int]) -> None:
    frames = message(*(b"z" * size for size in sizes))
    pieces = record_pieces(frames)
    assert b"".join(pieces) == pack_bytes(frames)
    large = [frame for frame in frames if len(frame) >= VIEW_FROM]
    assert [piece for piece in pieces if any(piece is frame for frame in large)] == large
    assert len(pieces) == 2 * len(large) + 1 - (frames[-1] in large and len(large) > 0)
