"""A PTS for the console's browser tests: it draws a small PNG (no imaging library needed) and
returns it as binary output beside a JSON value, reporting progress as it goes."""

from __future__ import annotations

import struct
import zlib
from typing import Any

from protocols.context import RunContext

SIZE = 16


def png_bytes(size: int = SIZE, colour: tuple[int, int, int] = (46, 91, 218)) -> bytes:
    """A ``size`` x ``size`` PNG of one colour with a white diagonal."""
    rows = b"".join(
        b"\0" + b"".join(bytes((255, 255, 255) if x == y else colour) for x in range(size))
        for y in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def plot(data: Any, ctx: RunContext | None = None) -> dict[str, Any]:
    """``{"image": PNG, "blob": bytes, "size": n}``: an image, a download and plain JSON."""
    if ctx is not None:
        ctx.progress(50, "drawing")
        ctx.log("drew a square")
    return {"image": png_bytes(), "blob": b"\x00\x01 not an image", "size": SIZE}
