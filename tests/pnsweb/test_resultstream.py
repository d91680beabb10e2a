"""The stored-result transcoder: msgpack in small chunks gives exactly the JSON of the whole."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest

from pnsd.spec import parse_spec
from pnsweb import ogc
from pnsweb.ogcvalues import outputs_of, results_document
from pnsweb.resultstream import MsgpackReader, write_value
from pnsweb.views_v1_io import encode_json
from pnsweb.views_v1_results import output_head
from protocols.errors import ProtocolError

VALUES: list[Any] = [
    None, True, False, 0, 127, 128, -1, -33, -129, 2**40, -(2**40), 2**64 - 1, 1.5, -0.25,
    "", "a", "é" * 40, "日本語" * 30, "quote \" backslash \\ newline \n tab \t", "x" * 70_000,
    b"", b"\x00", b"ab", b"abc", b"abcd", bytes(range(256)) * 300,
    [], [1, [2, [3, "four"]]], {}, {"k": {"nested": [b"\xff" * 5, {"deep": None}]}},
    {1: "int key", 2.5: "float key", False: "bool key", None: "nil key"},
    list(range(20)), {f"k{i}": i for i in range(20)}, {"s": "x" * 300, "b": b"y" * 70_000},
]


def source(blob: bytes, size: int) -> AsyncIterator[bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(blob), size):
            yield blob[start:start + size]
    return chunks()


async def transcode(value: Any, *, size: int, qualified: bool = False) -> bytes:
    out = bytearray()

    async def write(data: bytes) -> None:
        out.extend(data)

    reader = MsgpackReader(source(msgpack.packb(value, use_bin_type=True), size))
    await write_value(reader, await reader.head(), write, qualified=qualified)
    return bytes(out)


@pytest.mark.parametrize("value", VALUES)
@pytest.mark.parametrize("size", [1, 7, 64 * 1024])
async def test_each_value_streams_to_the_json_of_the_whole(value: Any, size: int) -> None:
    assert await transcode(value, size=size) == encode_json(value)


def model(table: dict[str, Any]) -> ogc.ProcessModel:
    """The process model pnsweb builds from pnsd's description of ``table``."""
    spec = parse_spec("p", table)
    process = spec.mode.value == "process"
    return ogc.model_of({"spec": spec.public(),
                         "interface": spec.interface.described(process=process)})


async def test_bytes_at_the_top_become_a_qualified_value_as_in_the_results_document() -> None:
    data = bytes(range(256)) * 10
    streamed = await transcode(data, size=5, qualified=True)
    whole = model({"mode": "inproc", "entry": "m:f"})
    assert json.loads(streamed) == results_document(whole, {"result": data})["result"]


@pytest.mark.parametrize("files", [{"outfile": b"\x01" * 100, "other": "text"}, {}, None])
@pytest.mark.parametrize("outputs", [["outfile"], ["missing"], [], None])
async def test_process_outputs_are_found_as_outputs_of_picks_them(
    files: Any, outputs: list[str] | None,
) -> None:
    table: dict[str, Any] = {"mode": "process", "run": ["x"]}
    if outputs is not None:
        table["outputs"] = outputs
    described = model(table)
    result = {"returncode": 0, "outputs": files, "stdout": "s" * 10}
    expected = outputs_of(described, result)
    for port in described.outputs:
        reader = MsgpackReader(source(msgpack.packb(result, use_bin_type=True), 3))
        head = await output_head(reader, port)
        out = bytearray()

        async def write(data: bytes, out: bytearray = out) -> None:
            out.extend(data)

        if head is None:
            assert expected[port.id] is None
        else:
            await write_value(reader, head, write)
            assert bytes(out) == encode_json(expected[port.id])


async def test_a_cut_off_result_is_refused_not_guessed() -> None:
    blob = msgpack.packb({"a": "x" * 100}, use_bin_type=True)[:-10]
    reader = MsgpackReader(source(blob, 8))

    async def write(data: bytes) -> None:
        pass

    with pytest.raises(ProtocolError):
        await write_value(reader, await reader.head(), write)
