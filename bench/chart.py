"""The report's PNG chart, drawn without plotting libraries: a pixel canvas, a 5x7 bitmap font
and a minimal PNG encoder (zlib + CRC from the standard library).

Chosen over installing matplotlib at run time: nothing to download, nothing that can fail on
an offline machine, and the chart is simple — one horizontal bar per ratio (PNS / baseline,
higher is better) with the target drawn as a vertical line, green when met, red when missed.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from bench.report import Row, ratio_text

# 5x7 glyphs (HD44780 style): 7 rows of 5 bits each, top row first.
_GLYPHS = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 10001 11111 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    "%": "11000 11001 00010 00100 01000 10011 00011",
    "/": "00000 00001 00010 00100 01000 10000 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    ">": "01000 00100 00010 00001 00010 00100 01000",
    "<": "00010 00100 01000 10000 01000 00100 00010",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    " ": "00000 00000 00000 00000 00000 00000 00000",
}
_UNKNOWN = "11111 10001 10001 10001 10001 10001 11111"

Color = tuple[int, int, int]
WHITE, BLACK, GREY = (255, 255, 255), (30, 30, 30), (170, 170, 170)
GREEN, RED, BLUE, TARGET = (60, 160, 80), (210, 70, 60), (80, 120, 200), (120, 0, 0)


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(WHITE * (width * height))

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        x0, x1 = max(0, x0), min(self.width, x1)
        y0, y1 = max(0, y0), min(self.height, y1)
        if x1 <= x0:
            return
        line = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            start = (y * self.width + x0) * 3
            self.pixels[start:start + len(line)] = line

    def text(self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 1) -> None:
        for char in text.upper():
            rows = _GLYPHS.get(char, _UNKNOWN).split()
            for r, bits in enumerate(rows):
                for c, bit in enumerate(bits):
                    if bit == "1":
                        self.rect(x + c * scale, y + r * scale, x + (c + 1) * scale,
                                  y + (r + 1) * scale, color)
            x += 6 * scale

    def png(self) -> bytes:
        raw = b"".join(b"\0" + bytes(self.pixels[y * self.width * 3:(y + 1) * self.width * 3])
                       for y in range(self.height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def draw(rows: list[Row], path: Path) -> None:
    """One bar per row with a ratio (higher is better); scale 0-200 %, longer bars clipped."""
    bars = [r for r in rows if r.ratio is not None and not r.lower_is_better]
    label_w, bar_w, row_h, top = 400, 520, 20, 50
    width, height = label_w + bar_w + 190, top + row_h * max(1, len(bars)) + 40
    canvas = Canvas(width, height)
    canvas.text(10, 10, "PNS / BASELINE, SAME RUN (TARGET = DARK RED LINE)", scale=2)
    full = 2.0   # 200 % at the right edge

    def x_of(ratio: float) -> int:
        return label_w + int(bar_w * min(ratio, full) / full)

    for pct in (0.5, 1.0, 1.5, 2.0):
        x = x_of(pct)
        canvas.rect(x, top - 6, x + 1, top + row_h * len(bars), GREY)
        canvas.text(x - 12, top + row_h * len(bars) + 6, f"{pct * 100:.0f}%", GREY)
    for i, row in enumerate(bars):
        y = top + i * row_h
        assert row.ratio is not None
        # colour by the verdict only when the target is about this bar (not a reference figure)
        verdict = row.verdict if row.target is not None and row.target.on == "ratio" else ""
        color = GREEN if verdict == "PASS" else RED if verdict == "MISS" else BLUE
        canvas.text(10, y + 6, row.label[:64])
        canvas.rect(label_w, y + 3, x_of(row.ratio), y + row_h - 3, color)
        canvas.text(x_of(row.ratio) + 6, y + 6, ratio_text(row) + ("+" if row.ratio > full
                                                                     else ""))
        if row.target is not None and row.target.on == "ratio":
            if row.target.value <= full:
                x = x_of(row.target.value)
                canvas.rect(x - 1, y, x + 2, y + row_h, TARGET)
            else:   # off the scale: say it in words
                canvas.text(x_of(full) + 60, y + 6, f"TARGET {row.target.text(row.unit)}",
                            TARGET)
    path.write_bytes(canvas.png())
