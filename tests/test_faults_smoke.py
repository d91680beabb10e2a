"""The fault suite runs end to end: its quick protocol-garbage fault passes and is tabled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_protocol_garbage_fault_passes_and_prints_its_row() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "faults", "--quick", "--only", "protocol"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("protocol ")]
    assert len(rows) == 1, done.stdout
    fault, tries, sent, failed, lost, expected, verdict, _seconds = rows[0]
    assert (fault, tries, failed, lost, verdict) == ("protocol", "1", "0", "0", "passed")
    assert int(sent) > 1000         # the 1,000 bad messages and the good client's runs
    assert int(expected) > 500      # most bad messages were answered with their error


@pytest.mark.slow
def test_quick_replay_fault_refuses_every_replay_and_makes_no_duplicate_job() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "faults", "--quick", "--only", "replay"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("replay ")]
    assert len(rows) == 1, done.stdout
    _fault, _tries, _sent, failed, lost, expected, verdict, _seconds = rows[0]
    assert (failed, lost, verdict) == ("0", "0", "passed")
    assert int(expected) >= 28      # three replays of each of 8 submits, and 4 out of window
