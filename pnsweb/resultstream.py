"""A stored result, streamed as JSON: msgpack read chunk by chunk, written out as it is read.

A result too large for one daemon message is fetched with ``job.result_chunk`` (its msgpack
form, a few MiB at a time). :class:`MsgpackReader` walks that form one header at a time and
:func:`write_value` turns each value into JSON as it goes: strings and byte strings (base64)
are relayed in pieces, so memory holds a chunk and a map key, never the result. The JSON is
the one :func:`pnsweb.views_v1_io.encode_json` gives for the same value. It must not decide
what is shown (the views do) and never touches HTTP itself: it writes through a callback.
"""

from __future__ import annotations

import base64
import codecs
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from protocols.errors import ErrorCode, ProtocolError

Write = Callable[[bytes], Awaitable[None]]
MAX_KEY = 64 * 1024        # bytes of a map key held at once (keys are names, not data)
PIECE = 192 * 1024         # bytes of a string relayed at once (a multiple of 3: base64)
OCTETS = "application/octet-stream"

_FIXED = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q", 0xd0: ">b", 0xd1: ">h", 0xd2: ">i",
          0xd3: ">q", 0xca: ">f", 0xcb: ">d"}
_SIZED = {0xc4: ("bin", 1), 0xc5: ("bin", 2), 0xc6: ("bin", 4), 0xd9: ("str", 1),
          0xda: ("str", 2), 0xdb: ("str", 4), 0xdc: ("array", 2), 0xdd: ("array", 4),
          0xde: ("map", 2), 0xdf: ("map", 4)}
_WIDTH = {1: ">B", 2: ">H", 4: ">I"}
# every value whose first byte says it all: fixints, nil, booleans, fixmap/array/str lengths
_ONE_BYTE: dict[int, tuple[str, Any]] = {
    **{b: ("value", b) for b in range(0x80)},
    **{b: ("value", b - 0x100) for b in range(0xe0, 0x100)},
    **{b: ("map", b & 0x0f) for b in range(0x80, 0x90)},
    **{b: ("array", b & 0x0f) for b in range(0x90, 0xa0)},
    **{b: ("str", b & 0x1f) for b in range(0xa0, 0xc0)},
    0xc0: ("value", None), 0xc2: ("value", False), 0xc3: ("value", True),
}
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def malformed(text: str) -> ProtocolError:
    return ProtocolError(ErrorCode.MALFORMED, f"the stored result cannot be read: {text}")


class MsgpackReader:
    """Reads msgpack from an async source of byte chunks, one header or piece at a time."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""
        self._at = 0

    async def _fill(self, need: int) -> None:
        """At least ``need`` unread bytes in the buffer (or raise at the end of the source)."""
        while len(self._buffer) - self._at < need:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                raise malformed("it ends in the middle of a value") from None
            self._buffer = self._buffer[self._at:] + chunk
            self._at = 0

    async def take(self, count: int) -> bytes:
        await self._fill(count)
        data = self._buffer[self._at:self._at + count]
        self._at += count
        return data

    async def pieces(self, count: int) -> AsyncIterator[bytes]:
        """``count`` bytes in pieces of at most :data:`PIECE` (a string's content)."""
        while count > 0:
            await self._fill(1)
            piece = self._buffer[self._at:self._at + min(count, PIECE)]
            self._at += len(piece)
            count -= len(piece)
            yield piece

    async def head(self) -> tuple[str, Any]:
        """The next value's kind and, for a scalar its value, else its length."""
        first = (await self.take(1))[0]
        known = _ONE_BYTE.get(first)
        if known is not None:
            return known
        if first in _FIXED:
            fmt = _FIXED[first]
            return "value", struct.unpack(fmt, await self.take(struct.calcsize(fmt)))[0]
        if first in _SIZED:
            kind, width = _SIZED[first]
            return kind, struct.unpack(_WIDTH[width], await self.take(width))[0]
        raise malformed(f"type byte 0x{first:02x} is not a plain msgpack value")

    async def skip(self, head: tuple[str, Any]) -> None:
        kind, value = head
        if kind in ("str", "bin"):
            async for _piece in self.pieces(value):
                pass
        elif kind in ("array", "map"):
            for _ in range(value * (2 if kind == "map" else 1)):
                await self.skip(await self.head())

    async def key(self) -> str:
        """A map key as JSON shows it (a string; other scalars as json.dumps does)."""
        kind, value = await self.head()
        if kind in ("str", "bin"):
            if value > MAX_KEY:
                raise malformed(f"a map key of {value} bytes")
            raw = await self.take(value)
            return raw.decode() if kind == "str" else base64.b64encode(raw).decode("ascii")
        if kind != "value":
            raise malformed("a map key that is a map or an array")
        return _ENCODER.encode({value: 0})[2:-5]   # as JSON turns a non-string key into text

    async def find(self, key: str, head: tuple[str, Any] | None = None) -> tuple[str, Any] | None:
        """In the map that comes next (or that ``head`` starts): the head of ``key``'s value
        (the rest of the map is left unread), or None when there is no map or no such key."""
        head = head or await self.head()
        if head[0] != "map":
            await self.skip(head)
            return None
        for _ in range(head[1]):
            if await self.key() == key:
                return await self.head()
            await self.skip(await self.head())
        return None


async def write_value(reader: MsgpackReader, head: tuple[str, Any], out: Write, *,
                      qualified: bool = False, media_type: str | None = None) -> None:
    """The value ``head`` starts as JSON; bytes as base64 (``qualified``: OGC's qualified
    value of ``media_type``, as :func:`pnsweb.ogcvalues.shown` shows an output's bytes)."""
    kind, value = head
    if kind == "value":
        await out(_ENCODER.encode(value).encode())
    elif kind == "str":
        await _write_text(reader, value, out)
    elif kind == "bin":
        if qualified:
            await out(b'{"value": ')
        await write_base64(reader, value, out, quoted=True)
        if qualified:
            await out(b', "encoding": "base64", "mediaType": '
                      + _ENCODER.encode(media_type or OCTETS).encode() + b"}")
    elif kind == "array":
        await out(b"[")
        for index in range(value):
            if index:
                await out(b", ")
            await write_value(reader, await reader.head(), out)
        await out(b"]")
    else:
        await out(b"{")
        for index in range(value):
            if index:
                await out(b", ")
            await out(_ENCODER.encode(await reader.key()).encode() + b": ")
            await write_value(reader, await reader.head(), out)
        await out(b"}")


async def _write_text(reader: MsgpackReader, size: int, out: Write) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    await out(b'"')
    try:
        async for piece in reader.pieces(size):
            await out(_ENCODER.encode(decoder.decode(piece))[1:-1].encode())
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise malformed(f"a string is not UTF-8 ({exc.reason})") from exc
    await out(b'"')


async def write_base64(reader: MsgpackReader, size: int, out: Write, *, quoted: bool) -> None:
    """A byte string's content as base64, encoded 3 bytes at a time: the same as at once."""
    if quoted:
        await out(b'"')
    rest = b""
    async for piece in reader.pieces(size):
        joined = rest + piece if rest else piece
        cut = len(joined) - len(joined) % 3
        await out(base64.b64encode(joined[:cut]))
        rest = joined[cut:]
    await out(base64.b64encode(rest))
    if quoted:
        await out(b'"')


async def write_raw(reader: MsgpackReader, size: int, out: Write) -> None:
    async for piece in reader.pieces(size):
        await out(piece)

