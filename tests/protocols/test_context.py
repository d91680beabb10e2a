"""RunContext: what a PTS reports reaches its sinks, and a bad progress value fails nothing."""

from __future__ import annotations

import pytest

from protocols.context import RunContext


@pytest.mark.parametrize("percent", [float("nan"), float("inf"), float("-inf")])
def test_a_progress_that_is_not_a_finite_number_is_ignored_with_a_log_line(
        percent: float) -> None:
    progress: list[tuple[int, str]] = []
    lines: list[str] = []
    ctx = RunContext("j", lambda value, text: progress.append((value, text)), lines.append)
    ctx.progress(percent, "bad")
    ctx.progress(250, "clamped")
    assert progress == [(100, "clamped")]
    assert lines == [f"progress ignored: {percent!r} is not a finite number"]
