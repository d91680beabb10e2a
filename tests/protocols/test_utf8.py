"""A string's UTF-8 bytes: an ASCII string's own storage (not copied), anything else encoded."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from protocols.utf8 import VIEW_FROM, utf8

SIZE = 4 * 2**20


def test_a_large_ascii_string_is_a_read_only_view_of_its_own_bytes() -> None:
    text = "".join(["ab"] * (SIZE // 2))
    tracemalloc.start()
    try:
        data = utf8(text)
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(data, memoryview) and data.readonly
    assert len(data) == SIZE and data == text.encode()
    assert held < SIZE // 8, f"{held} bytes allocated for a view of {SIZE}"
    with pytest.raises(TypeError):
        data[0] = 0      # type: ignore[index]


def test_the_view_keeps_its_string_alive() -> None:
    text = "".join(["xyz"] * VIEW_FROM)      # a string of its own, not interned or shared
    data = utf8(text)
    del text
    gc.collect()
    filler = ["q" * (3 * VIEW_FROM) for _ in range(64)]  # would reuse freed memory
    assert bytes(data) == b"xyz" * VIEW_FROM and filler


@pytest.mark.parametrize("text", ["é" * VIEW_FROM, "a" * (VIEW_FROM - 1), "", "\U0001f600" * 9])
def test_other_strings_are_encoded(text: str) -> None:
    data = utf8(text)
    assert isinstance(data, bytes) and data == text.encode("utf-8")
