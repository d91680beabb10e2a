"""The stdio transport's vectors: records cut as documented, broken streams refused, and the
generator reproduces the file exactly."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from protocols.codec import Codec
from protocols.stdioframe import FrameReader, FramingError, pack_bytes
from tests.protocols import stdio_vectors_gen

FILE = json.loads(Path(stdio_vectors_gen.PATH).read_text())
VECTORS = FILE["vectors"]


def test_the_vector_file_is_what_the_generator_makes() -> None:
    assert stdio_vectors_gen.render() == Path(stdio_vectors_gen.PATH).read_text()


@pytest.mark.parametrize("case", [c for c in VECTORS if c["verdict"] == "ok"],
                         ids=lambda c: c["name"])
@pytest.mark.parametrize("chunk", [1, 7, 1 << 20])
def test_a_good_stream_gives_its_messages_in_any_chunking(case: dict[str, Any],
                                                          chunk: int) -> None:
    stream = base64.b64decode(case["stream"])
    reader = FrameReader(FILE["limit"])
    got: list[list[bytes]] = []
    for start in range(0, len(stream), chunk):
        got += reader.feed(stream[start:start + chunk])
    assert reader.pending() == 0
    assert got == [[base64.b64decode(f) for f in m["frames"]] for m in case["messages"]]
    codec = Codec(FILE["key"].encode(), clock=lambda: FILE["now"])
    for frames, expected in zip(got, case["messages"], strict=True):
        message = codec.decode(frames)
        assert (message.type, message.id, message.re) == (
            expected["expect"]["type"], expected["expect"]["id"], expected["expect"]["re"])
        assert stdio_vectors_gen.plain(message.body) == expected["expect"]["body"]


@pytest.mark.parametrize("case", [c for c in VECTORS if c["verdict"] == "ok"],
                         ids=lambda c: c["name"])
def test_packing_the_frames_gives_the_stream(case: dict[str, Any]) -> None:
    stream = b"".join(pack_bytes([base64.b64decode(f) for f in m["frames"]])
                      for m in case["messages"])
    assert stream == base64.b64decode(case["stream"])


@pytest.mark.parametrize("case", [c for c in VECTORS if c["verdict"] == "broken"],
                         ids=lambda c: c["name"])
def test_a_broken_stream_is_refused(case: dict[str, Any]) -> None:
    with pytest.raises(FramingError):
        FrameReader(FILE["limit"]).feed(base64.b64decode(case["stream"]))


def test_garbage_is_caught_from_its_first_bytes() -> None:
    """A stray text line is refused at its first 4 bytes, not after buffering a record."""
    with pytest.raises(FramingError, match="garbage"):
        FrameReader(FILE["limit"]).feed(b"prin")
    with pytest.raises(FramingError, match="marker"):
        FrameReader(FILE["limit"]).feed(b"\0\0\0\x10\0\0\0\x04")


def test_a_partial_record_is_pending() -> None:
    case = next(c for c in VECTORS if c["verdict"] == "partial")
    reader = FrameReader(FILE["limit"])
    assert reader.feed(base64.b64decode(case["stream"])) == []
    assert reader.pending() == 30
