"""JSON replies with large values, written a piece at a time: the very bytes of the whole
encoding, every refusal found before anything is written, no piece larger than a few PIECEs."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from pnsweb import jsonstream
from pnsweb.jsonstream import LARGE, PIECE
from pnsweb.views_v1_io import _ENCODER, encode_json

BIG = LARGE + 1000
VALUES: list[Any] = [
    "a" * BIG,
    {"value": "a" * BIG},
    {"text": 'quote " back \\ nl \n tab \t nul \x00 é \U0001f600 ' * (BIG // 30)},
    {"b": bytes(range(256)) * (BIG // 256 + 1), "n": [1, 2.5, None, True], 3: "three"},
    [{"x": "y" * BIG}, "z" * (2 * BIG), {"small": "s"}, "ü" * BIG],
    {"deep": {"a": {"b": {"c": "a" * BIG}}}},
]


async def _written(value: Any) -> tuple[bytes, list[int]]:
    parts = jsonstream.plan(value, _ENCODER, base64_bytes=True)
    assert parts is not None
    writes: list[bytes] = []

    async def out(data: bytes) -> None:
        writes.append(data)

    await jsonstream.write(parts, out, _ENCODER)
    return b"".join(writes), [len(w) for w in writes]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
async def test_the_pieces_are_exactly_the_whole_encoding(value: Any) -> None:
    written, sizes = await _written(value)
    assert written == encode_json(value)
    assert json.loads(written) == json.loads(encode_json(value))
    assert max(sizes) <= 6 * PIECE     # an escape is at most 6 characters


async def test_a_large_string_is_never_encoded_whole() -> None:
    written, sizes = await _written({"value": "a" * (8 * PIECE)})
    assert len(sizes) >= 8 and max(sizes) <= PIECE + 16
    assert written.startswith(b'{"value": "aaa') and written.endswith(b'aaa"}')


def test_values_without_large_parts_are_left_to_the_whole_encoding() -> None:
    assert jsonstream.plan({"value": "a" * (LARGE - 1), "n": 1}, _ENCODER) is None
    assert jsonstream.plan({"b": b"x" * BIG}, _ENCODER) is None     # bytes: only when base64
    deeper = {"a": {"b": {"c": {"d": {"e": "a" * BIG}}}}}              # below MAX_DEPTH
    assert jsonstream.plan(deeper, _ENCODER) is None


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_value_json_cannot_hold_is_refused_before_anything_is_written(bad: float) -> None:
    with pytest.raises(ValueError, match="JSON"):
        jsonstream.plan({"value": "a" * BIG, "n": bad}, _ENCODER)


def test_a_lone_surrogate_in_a_large_string_is_refused_before_anything_is_written() -> None:
    with pytest.raises(UnicodeEncodeError):
        jsonstream.plan({"value": "é" * BIG + "\ud800"}, _ENCODER)


SMALL_REPLIES: list[Any] = [
    1, None, "a" * (LARGE - 1), b"b" * BIG, {"x": 1, "values": [1.5, 2.5], "flag": True},
    [{"a": [{"b": ["c" * (LARGE - 1)]}]}],
    {"a": {"b": {"c": {"d": ["e" * BIG]}}}},       # a list at MAX_DEPTH is not looked into
]


@pytest.mark.parametrize("value", SMALL_REPLIES, ids=range(len(SMALL_REPLIES)))
def test_a_small_reply_is_looked_through_and_never_copied(
        value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_copy(*args: Any) -> None:
        raise AssertionError("a small reply was copied")

    monkeypatch.setattr(jsonstream, "_Aside", no_copy)
    assert jsonstream.plan(value, _ENCODER) is None


def test_large_values_are_found_as_deep_as_they_are_taken_out() -> None:
    at_max_depth = {"a": {"b": {"c": {"d": "e" * BIG}}}}
    in_a_list = [1, [2, {"x": b"y" * BIG}]]
    assert jsonstream.plan(at_max_depth, _ENCODER) is not None
    assert jsonstream.plan(in_a_list, _ENCODER, base64_bytes=True) is not None
