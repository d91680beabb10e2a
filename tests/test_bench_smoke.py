"""The benchmark suite runs end to end and reports every figure of the direct area."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import area_direct

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_quick_direct_bench_writes_a_report_with_every_direct_row(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "direct", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=140, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = (tmp_path / "report.md").read_text()
    rows = {row["key"]: row for row in json.loads((tmp_path / "report.json").read_text())["rows"]}
    for key, label in area_direct.LABELS.items():
        assert label in report
        assert rows[key]["pns"] is not None, f"{key} not measured: {rows[key]['note']}"
        assert rows[key]["base"] is not None, f"{key} has no baseline: {rows[key]['note']}"
        assert rows[key]["errors"] == 0, f"{key}: {rows[key]['note']}"
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "| figure | PNS | baseline (same run)" in report
