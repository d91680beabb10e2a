"""The report's PNG chart: one horizontal bar per ratio (PNS / baseline, higher is better),
with the row's target drawn as a short dark red line across its bar; a bar is green when its
target is met, red when missed, blue when the row has no ratio target.

Drawn with matplotlib's object API (a ``Figure`` of its own, no pyplot state, no display
needed); matplotlib comes with the optional ``bench`` extra.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from bench.report import Row, ratio_text

FULL = 2.0      # the right edge of the scale: 200 %; longer bars are clipped and marked "+"
GREEN, RED, BLUE, TARGET = "#3ca050", "#d2463c", "#5078c8", "#780000"


def draw(rows: list[Row], path: Path) -> None:
    """One bar per row with a ratio (higher is better), written to ``path`` as PNG."""
    bars = [r for r in rows if r.ratio is not None and not r.lower_is_better]
    figure = Figure(figsize=(12, 1.2 + 0.3 * max(1, len(bars))), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title("PNS / baseline, same run (target: dark red line)")
    for y, row in enumerate(bars):
        assert row.ratio is not None
        on_ratio = row.target is not None and row.target.on == "ratio"
        # coloured by the verdict only when the target is about this bar (not a reference figure)
        verdict = row.verdict if on_ratio else ""
        color = GREEN if verdict == "PASS" else RED if verdict == "MISS" else BLUE
        end = min(row.ratio, FULL)
        axes.barh(y, end, color=color, height=0.7)
        shown = ratio_text(row) + ("+" if row.ratio > FULL else "")
        if on_ratio and row.target is not None and row.target.value > FULL:   # off the scale
            shown += f"   target {row.target.text(row.unit)}"
        elif on_ratio and row.target is not None:
            axes.vlines(row.target.value, y - 0.45, y + 0.45, colors=TARGET, linewidth=2.5)
            end = max(end, row.target.value)
        axes.text(end + 0.02, y, shown, va="center", fontsize=8)
    axes.set_yticks(range(len(bars)), [row.label[:64] for row in bars], fontsize=8)
    axes.invert_yaxis()                       # the report's order, top to bottom
    axes.set_xlim(0, FULL + 0.45)             # room for the figures written after the bars
    axes.set_xticks([0, 0.5, 1.0, 1.5, 2.0], ["0", "50 %", "100 %", "150 %", "200 %"])
    axes.grid(axis="x", color="#aaaaaa", linewidth=0.5)
    axes.set_axisbelow(True)
    figure.savefig(path, format="png", dpi=100)
