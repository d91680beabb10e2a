"""Figures and how they are written: the ``Row`` of the report, the Markdown file, the table.

Owns formatting (rates, latencies, sizes), the ratio and target verdict of a row, and the
text of ``report.md`` / ``report.json``. Measuring is elsewhere.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Target:
    """``ratio >= 0.6`` (on="ratio"), ``pns <= 60`` (on="pns") or ``pns / ref > 10``
    (on="ref": against the reference implementation's published figure)."""

    op: str            # ">=", "<=", ">"
    value: float
    on: str = "ratio"
    source: str = ""   # "issue 7" etc.

    def met(self, ratio: float | None, pns: float | None,
            ref: float | None = None) -> bool | None:
        subject = {"ratio": ratio, "pns": pns,
                   "ref": pns / ref if pns is not None and ref else None}[self.on]
        if subject is None:
            return None
        return {">=": subject >= self.value, "<=": subject <= self.value,
                ">": subject > self.value}[self.op]

    def text(self, unit: str) -> str:
        if self.on == "ref":
            return f"{self.op} {self.value:g}x ref"
        if self.on == "ratio":
            shown = f"{self.value:g}x" if self.value >= 2 else f"{self.value * 100:g} %"
        else:
            shown = fmt(self.value, unit)
        return f"{self.op} {shown}"


@dataclass
class Row:
    area: str
    key: str                         # stable id, e.g. "direct.inproc.seq"
    label: str
    unit: str                        # "/s", "MB/s", "MB", "x", "s"
    pns: float | None = None
    base: float | None = None
    base_label: str = ""
    pns_lat: tuple[float | None, float | None] | None = None    # p50, p99 (s)
    base_lat: tuple[float | None, float | None] | None = None
    lower_is_better: bool = False
    ratio: float | None = None
    target: Target | None = None
    ref: float | None = None         # the reference implementation's figure (another run)
    note: str = ""
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ratio is None and self.pns is not None and self.base:
            self.ratio = self.pns / self.base

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        met = self.target.met(self.ratio, self.pns, self.ref)
        if met is None:
            return "not measured"
        return "PASS" if met else "MISS"

    @property
    def measured(self) -> bool:
        return self.pns is not None


NONE = "-"


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return NONE
    if unit == "/s":
        return f"{value / 1000:.2f} k/s" if value >= 1000 else f"{value:.1f} /s"
    if unit == "MB/s":
        return f"{value:,.0f} MB/s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "x":
        return f"{value:.1f}x"
    if unit == "s":
        return fmt_time(value)
    return f"{value:g} {unit}"


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_lat(lat: tuple[float | None, float | None] | None) -> str:
    if lat is None:
        return ""
    return f" (p50 {fmt_time(lat[0])}, p99 {fmt_time(lat[1])})"


def ratio_text(row: Row) -> str:
    if row.ratio is None:
        return NONE
    if row.unit == "x" or row.ratio >= 2:
        return f"{row.ratio:.1f}x"
    return f"{row.ratio * 100:.1f} %" if row.ratio < 1 else f"{row.ratio * 100:.0f} %"


def cells(row: Row) -> list[str]:
    ref = ""
    if row.ref is not None and row.pns is not None:
        ref = f"{fmt(row.ref, row.unit)} → {row.pns / row.ref:.1f}x"
    target = row.target.text(row.unit) if row.target else ""
    pns = fmt(row.pns, row.unit) + fmt_lat(row.pns_lat) if row.measured else "not measured"
    base = fmt(row.base, row.unit) + fmt_lat(row.base_lat)
    if row.base_label:
        base += f" — {row.base_label}"
    return [row.label, pns, base, ratio_text(row), target, row.verdict, ref]


HEADERS = ["figure", "PNS", "baseline (same run)", "ratio PNS/base", "target", "result",
           "reference implementation's figure (other run) → PNS/ref"]


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells(row)) + " |")
    return "\n".join(lines)


def stdout_table(rows: list[Row]) -> str:
    head = f"{'figure':<46} {'PNS':>12} {'baseline':>12} {'ratio':>8} {'target':>9} result"
    lines = [head, "-" * len(head)]
    for row in rows:
        pns = fmt(row.pns, row.unit) if row.measured else "n/m"
        target = row.target.text(row.unit) if row.target else ""
        lines.append(f"{row.label[:46]:<46} {pns:>12} {fmt(row.base, row.unit):>12} "
                     f"{ratio_text(row):>8} {target:>9} {row.verdict}")
    return "\n".join(lines)


def _miss(row: Row) -> str:
    assert row.target is not None
    got = {"ratio": ratio_text(row), "pns": fmt(row.pns, row.unit),
           "ref": f"{(row.pns or 0) / (row.ref or 1):.1f}x ref"}[row.target.on]
    return f"{row.label} ({got} vs {row.target.text(row.unit)})"


def write(out: Path, rows: list[Row], *, meta: dict[str, Any], notes: list[str],
          chart: str) -> None:
    misses = [r for r in rows if r.verdict == "MISS"]
    passes = [r for r in rows if r.verdict == "PASS"]
    parts = [
        "# PNS benchmark report",
        "",
        f"Generated by `make bench` (`python -m bench{' --quick' if meta['quick'] else ''}`) "
        f"on {meta['when']}: {meta['cpus']} CPUs, Python {platform.python_version()}, "
        f"pyzmq {meta['pyzmq']} (libzmq {meta['libzmq']}), msgpack {meta['msgpack']}, "
        f"aiohttp {meta['aiohttp']}; {meta['trials']} interleaved trials per figure "
        f"(medians), {meta['seconds']:.1f} s per ZeroMQ trial; wall time "
        f"{meta['wall']:.0f} s.",
        "",
        f"**Targets: {len(passes)} PASS, {len(misses)} MISS.**"
        + (" Missed: " + "; ".join(_miss(r) for r in misses) if misses else ""),
        "",
        markdown_table(rows),
        "",
        f"![ratios against targets]({chart})",
        "",
        "## Notes per figure",
        "",
    ]
    for row in rows:
        if row.note or row.errors:
            err = f" **{row.errors} failed requests.**" if row.errors else ""
            parts.append(f"- **{row.label}**: {row.note}{err}")
    parts += ["", "## Method", ""] + [f"- {n}" for n in notes] + [""]
    out.joinpath("report.md").write_text("\n".join(parts))
    out.joinpath("report.json").write_text(json.dumps(
        {"meta": meta, "rows": [asdict(r) | {"verdict": r.verdict} for r in rows]}, indent=1))
