"""The ledger of process groups and the start-up sweep: only what a previous life left goes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pnsd.hosts.leftovers import GroupLedger, Leftovers, start_time


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait(timeout=10)


def test_a_recorded_group_that_still_runs_is_killed(
    tmp_path: Path, sleeper: subprocess.Popen[bytes],
) -> None:
    ledger = GroupLedger(tmp_path / "groups")
    ledger.record(sleeper.pid)
    assert GroupLedger(tmp_path / "groups").end_leftovers() == [sleeper.pid]
    assert sleeper.wait(timeout=10) == -9
    assert list((tmp_path / "groups").iterdir()) == []


def test_a_recycled_pid_is_not_taken_for_a_recorded_group(
    tmp_path: Path, sleeper: subprocess.Popen[bytes],
) -> None:
    ledger = GroupLedger(tmp_path / "groups")
    ledger.record(sleeper.pid)
    entry = tmp_path / "groups" / str(sleeper.pid)
    booted, started = entry.read_text().split()
    entry.write_text(f"{booted} {int(started) - 1}\n")     # another process had this id then
    assert ledger.end_leftovers() == []
    assert sleeper.poll() is None
    entry.write_text(f"another-boot {started}\n")
    ledger.end_leftovers()
    assert sleeper.poll() is None


def test_a_forgotten_or_finished_group_is_left_alone(tmp_path: Path) -> None:
    ledger = GroupLedger(tmp_path / "groups")
    done = subprocess.Popen(["true"], start_new_session=True)
    ledger.record(done.pid)
    done.wait(timeout=10)
    assert start_time(done.pid) is None
    assert ledger.end_leftovers() == []


def test_the_sweep_removes_worker_files_and_work_areas_only(tmp_path: Path) -> None:
    run, work = tmp_path / "run", tmp_path / "work"
    for path in (run / "w-echo-1.lib", work / "hello" / "gen-1" / "job", work / "keep"):
        path.mkdir(parents=True)
    for path in (run / "w-echo-1.sock", run / "pnsd.pid", work / "hello" / "note"):
        path.touch()
    Leftovers(GroupLedger(run / "groups"), run_dir=run, work_dir=work).clean()
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "run", "run/pnsd.pid", "work", "work/hello", "work/hello/note", "work/keep"]
