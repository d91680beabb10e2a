"""The shipped test vectors decode as documented, and our encoder reproduces them exactly."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest

from protocols.codec import Codec, read_refusal
from protocols.errors import ProtocolError
from tests.protocols import vectors_gen

VECTORS = json.loads((Path(vectors_gen.PATH)).read_text())["vectors"]


def frames_of(case: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(f) for f in case["frames"]]


def plain(value: Any) -> Any:
    """Bytes as the vectors spell them ({"base64": ...}), for comparison with JSON."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def test_the_vector_file_is_what_the_generator_makes() -> None:
    assert vectors_gen.render() == Path(vectors_gen.PATH).read_text()


@pytest.mark.parametrize("case", [c for c in VECTORS if "expect" in c], ids=lambda c: c["name"])
def test_good_vector_decodes_to_its_expected_message(case: dict[str, Any]) -> None:
    codec = Codec(case["key"].encode(), clock=lambda: case["now"],
                  local=case.get("receiver") == "ipc")
    message = codec.decode(frames_of(case))
    expect = case["expect"]
    assert (message.type, message.id, message.re, message.ts) == (
        expect["type"], expect["id"], expect["re"], expect["ts"])
    assert plain(message.body) == expect["body"]


@pytest.mark.parametrize("case", [c for c in VECTORS if "error" in c], ids=lambda c: c["name"])
def test_bad_vector_is_refused_with_its_code(case: dict[str, Any]) -> None:
    codec = Codec(case["key"].encode(), clock=lambda: case["now"],
                  local=case.get("receiver") == "ipc")
    with pytest.raises(ProtocolError) as caught:
        codec.decode(frames_of(case))
    assert caught.value.code == case["error"]


def test_blob_vector_carries_the_bytes_in_a_frame_of_its_own() -> None:
    case = next(c for c in VECTORS if "blob" in c["name"])
    frames = frames_of(case)
    assert len(frames) == 5 and len(frames[4]) == 256 * 300


def test_the_text_blob_vector_carries_the_utf8_bytes_in_a_frame_of_its_own() -> None:
    case = next(c for c in VECTORS if "text blob" in c["name"])
    frames = frames_of(case)
    assert len(frames) == 5 and frames[4] == ("é" * 33_000 + "x" * 33_000).encode("utf-8")
    assert msgpack.unpackb(frames[3], ext_hook=lambda code, data: code)["result"] == 2


def test_the_ipc_blob_vector_signs_the_blob_lengths_and_not_the_blob() -> None:
    case = next(c for c in VECTORS if c.get("receiver") == "ipc" and "expect" in c)
    frames = frames_of(case)
    signer = Codec(case["key"].encode()).signer
    assert frames[1] == signer.sign([frames[0], frames[2], frames[3]])
    assert msgpack.unpackb(frames[2])[5:] == [None, [256 * 300]]
    tampered = [*frames[:4], bytes(256 * 300)]   # same length, other bytes: taken (by design)
    codec = Codec(case["key"].encode(), clock=lambda: case["now"], local=True)
    assert codec.decode(tampered).body["input"] == bytes(256 * 300)


def test_the_refusal_vector_is_read_unverified_and_only_as_a_refusal() -> None:
    case = next(c for c in VECTORS if "refusal" in c)
    frames = frames_of(case)
    with pytest.raises(ProtocolError):       # unsigned: a keyed codec cannot accept it
        Codec(case["key"].encode(), clock=lambda: case["now"]).decode(frames)
    message = read_refusal(frames)
    expect = case["refusal"]
    assert message is not None
    assert (message.type, message.id, message.re, message.ts, message.body) == (
        expect["type"], expect["id"], expect["re"], expect["ts"], expect["body"])
