"""PTS code for tests/integration/test_web_interface.py: a PNG drawn with the stdlib only.

No tests in this module: its callables are served by worker-mode PTS, and the process-mode
script there imports :func:`png` from it.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png(size: int) -> bytes:
    """A ``size`` x ``size`` RGB gradient as a PNG file."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 255 // size, y * 255 // size, 128)) for x in range(size))
        for y in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows)) \
        + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def draw(inputs: dict[str, Any]) -> dict[str, Any]:
    """Worker PTS ``picture``: the PNG (bytes) and its size (a JSON number)."""
    size = inputs["size"]
    return {"png": png(size), "size": size}


def measure(inputs: dict[str, Any]) -> dict[str, Any]:
    """Worker PTS ``measure``: what arrived for the binary input ``image``."""
    image = inputs["image"]
    return {"type": type(image).__name__, "length": len(image),
            "png": image.startswith(SIGNATURE)}
