"""The bench chart: a PNG with one bar per ratio, coloured by its target's verdict."""

from __future__ import annotations

from pathlib import Path

from matplotlib.image import imread

from bench import chart
from bench.report import Row, Target


def _row(key: str, ratio: float, target: Target | None) -> Row:
    return Row(area="direct", key=key, label=key, unit="/s", pns=ratio, base=1.0, ratio=ratio,
               target=target)


def _has(image: object, color: str) -> bool:
    rgb = tuple(int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    pixels = image[..., :3]                                  # type: ignore[index]
    return bool((abs(pixels - rgb) < 0.02).all(axis=-1).any())


def test_bars_are_green_when_met_red_when_missed_and_blue_without_a_target(
        tmp_path: Path) -> None:
    rows = [_row("met", 0.8, Target(">=", 0.6)), _row("missed", 0.4, Target(">=", 0.6)),
            _row("plain", 1.2, None), _row("huge", 14.5, Target(">", 20))]
    chart.draw(rows, tmp_path / "few.png")
    image = imread(tmp_path / "few.png")
    assert (tmp_path / "few.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert _has(image, chart.GREEN) and _has(image, chart.RED) and _has(image, chart.BLUE)
    assert _has(image, chart.TARGET)


def test_the_chart_grows_with_its_rows_and_leaves_out_rows_without_a_ratio(
        tmp_path: Path) -> None:
    few = [_row(f"r{i}", 0.5, None) for i in range(3)]
    many = [_row(f"r{i}", 0.5, None) for i in range(30)]
    unmeasured = Row(area="direct", key="none", label="none", unit="/s")
    chart.draw([*few, unmeasured], tmp_path / "few.png")
    chart.draw(many, tmp_path / "many.png")
    assert imread(tmp_path / "many.png").shape[0] > 3 * imread(tmp_path / "few.png").shape[0]
    assert not _has(imread(tmp_path / "few.png"), chart.GREEN)
