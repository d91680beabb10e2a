"""The store's packed form of inputs and results: exactly msgpack's bytes, never joined first."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path
from typing import Any

import msgpack
import pytest

from pnsd.jobs.blobfiles import write_blobs
from pnsd.jobs.packed import Packed, pack

BIG = os.urandom(100_000)
VALUES: list[Any] = [
    BIG, memoryview(BIG), "x" * 70_000, "é" * 70_000, {"a": [1, BIG, {"z": "ü" * 66_000}], "b": 2},
    [b"small"] * 10_000, {"deep": {"a": {"b": {"c": BIG}}}}, {"small": 1}, None,
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_the_packed_form_is_exactly_msgpacks(value: Any) -> None:
    packed = pack(value)
    expected = msgpack.packb(value, use_bin_type=True)
    assert bytes(packed) == expected and len(packed) == len(expected)


def test_large_values_are_segments_holding_the_values_themselves() -> None:
    value = {"a": BIG, "t": "x" * 70_000}
    packed = pack(value)
    assert isinstance(packed, Packed)
    assert any(segment is BIG for segment in packed.segments)
    assert any(segment is value["t"] for segment in packed.segments)


def test_an_echoed_result_is_written_once_and_linked(tmp_path: Path) -> None:
    data = {"x": BIG}
    job_dir = tmp_path / "job"
    assert write_blobs(job_dir, {"input": pack(data), "result": pack(data)}) is None
    written = job_dir / "input.bin"
    linked = job_dir / "result.bin"
    assert written.read_bytes() == msgpack.packb(data) == linked.read_bytes()
    assert written.stat().st_ino == linked.stat().st_ino
    other = {"x": bytes(bytearray(BIG))}   # equal bytes, another object: a file of its own
    assert write_blobs(tmp_path / "two", {"input": pack(data), "result": pack(other)}) is None
    assert (tmp_path / "two" / "input.bin").stat().st_ino != \
        (tmp_path / "two" / "result.bin").stat().st_ino


def test_an_ascii_text_is_written_from_its_own_bytes(tmp_path: Path) -> None:
    """The writer writes a large ASCII string without encoding a copy of it first."""
    size = 4 * 2**20
    value = {"t": "w" * size}
    packed = pack(value)
    tracemalloc.start()
    try:
        assert write_blobs(tmp_path / "job", {"result": packed}) is None
        _held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < size // 8, f"{peak} bytes allocated at most to write {size} of text"
    assert (tmp_path / "job" / "result.bin").read_bytes() == msgpack.packb(value)
