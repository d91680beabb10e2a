"""JSON replies that hold large strings or byte strings, written piece by piece.

A 16 MiB string answered as JSON was held three times at once: the value, its JSON text and
that text's UTF-8 bytes. :func:`plan` encodes the reply with each large value (a ``str`` or
``bytes`` of at least :data:`LARGE`, in maps and lists) left out, and keeps the values to
write in their places (a reply without one, the common case, is only looked through once,
never copied: it is encoded whole); :func:`write` then writes the small parts as they are and
each large value as JSON a piece of :data:`PIECE` at a time (a string escaped as the encoder
escapes it, bytes as base64): the reply never exists whole, so it goes out with chunked
transfer.
The bytes written are exactly those of ``encoder.encode(value).encode()``. Everything that
could refuse the value (NaN, a lone surrogate, a type JSON has no form for) is found by
:func:`plan`, before anything is written. Never touches HTTP itself: it writes through a
callback.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

LARGE = 256 << 10          # characters (or bytes) of a value written in pieces
PIECE = 192 << 10          # characters (or bytes, a multiple of 3 for base64) per write
MAX_DEPTH = 4              # how deep in maps and lists large values are looked for
_SURROGATE = re.compile("[\ud800-\udfff]")

Write = Callable[[bytes], Awaitable[None]]


class Large:
    """A large value in its place in the reply, written in pieces."""

    __slots__ = ("value",)

    def __init__(self, value: str | bytes) -> None:
        self.value = value


def plan(value: Any, encoder: json.JSONEncoder, *,
         base64_bytes: bool = False) -> list[bytes | Large] | None:
    """The reply of ``value``: its small parts' JSON (bytes) and, between them, its large
    values (:class:`Large`); None when it holds none (encode it whole). Bytes are set aside
    only when ``base64_bytes`` says that the encoder writes them as a base64 string. Raises what
    ``encoder.encode(value).encode()`` would raise: ``ValueError`` for NaN,
    ``UnicodeEncodeError`` for a lone surrogate, ``TypeError`` for a value without a form."""
    kinds = (str, bytes) if base64_bytes else (str,)
    if not _holds_large(value, kinds):
        return None        # the common small reply: no copy, no marks
    aside = _Aside(kinds)
    skeleton = aside.take(value, 0)
    for item in aside.large:
        if isinstance(item, str) and not item.isascii() and _SURROGATE.search(item):
            item.encode()          # raises the UnicodeEncodeError encode() would
    text = encoder.encode(skeleton).encode()
    parts: list[bytes | Large] = []
    start = 0
    for mark, item in zip(aside.marks, aside.large, strict=True):
        token = encoder.encode(mark).encode()   # with its quotes: the value's place
        at = text.index(token, start)
        parts.extend((text[start:at], Large(item)))
        start = at + len(token)
    parts.append(text[start:])
    return [part for part in parts if not isinstance(part, bytes) or part]


def _holds_large(value: Any, kinds: tuple[type[str] | type[bytes], ...]) -> bool:
    """Whether ``value`` holds a large value where :class:`_Aside` would take it out.

    Looked at a level of nesting at a time, in one loop and without copying: most replies are
    small, and this is all the planning they get (bench/FINDINGS.md, "/v1 at one connection,
    second pass")."""
    level = [value]
    for depth in range(MAX_DEPTH + 1):
        inner: list[Any] = []
        for item in level:
            if isinstance(item, kinds):
                if len(item) >= LARGE:
                    return True
            elif depth < MAX_DEPTH:
                if isinstance(item, dict):
                    inner.extend(item.values())
                elif isinstance(item, list):
                    inner.extend(item)
        if not inner:
            return False
        level = inner
    return False


class _Aside:
    """The large values taken out of a value, and the marks left in their places."""

    def __init__(self, kinds: tuple[type[str] | type[bytes], ...]) -> None:
        self.kinds = kinds
        self.large: list[str | bytes] = []
        self.marks: list[str] = []
        self.salt = secrets.token_hex(8)   # marks no small part of a value holds by chance

    def take(self, value: Any, depth: int) -> Any:
        """``value`` with its large values replaced by marks (strings)."""
        if isinstance(value, self.kinds) and len(value) >= LARGE:
            self.marks.append(f"\x00{self.salt}:{len(self.marks)}\x00")
            self.large.append(value)
            return self.marks[-1]
        if depth < MAX_DEPTH and isinstance(value, dict):
            return {k: self.take(v, depth + 1) for k, v in value.items()}
        if depth < MAX_DEPTH and isinstance(value, list):
            return [self.take(v, depth + 1) for v in value]
        return value


async def write(parts: list[bytes | Large], out: Write, encoder: json.JSONEncoder) -> None:
    """Write a planned reply through ``out``, a large value :data:`PIECE` at a time (bytes
    as base64, as the encoder's own ``default`` writes them)."""
    pending = bytearray()      # small parts gathered into one write

    async def emit(data: bytes) -> None:
        if len(data) < PIECE // 2:
            pending.extend(data)
            if len(pending) < PIECE:
                return
            data = b""
        if pending:
            await out(bytes(pending))
            pending.clear()
        if data:
            await out(data)

    for part in parts:
        if isinstance(part, bytes):
            await emit(part)
            continue
        value = part.value
        await emit(b'"')
        if isinstance(value, str):
            for start in range(0, len(value), PIECE):
                await emit(encoder.encode(value[start:start + PIECE])[1:-1].encode())
        else:
            view = memoryview(value)
            for start in range(0, len(view), PIECE):
                await emit(base64.b64encode(view[start:start + PIECE]))
        await emit(b'"')
    if pending:
        await out(bytes(pending))
