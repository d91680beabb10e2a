"""The pidfile's lock: one holder per home, released by exit or by death, never by a reader."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pnsd.errors import Conflict
from pnsd.pidfile import Pidfile, read_pid


def test_a_second_holder_is_refused_and_the_first_keeps_its_file(tmp_path: Path) -> None:
    path = tmp_path / "run" / "pnsd.pid"
    with Pidfile(path):
        assert read_pid(path) == os.getpid()
        with pytest.raises(Conflict) as refused, Pidfile(path):
            pass
        assert f"pid {os.getpid()}" in refused.value.message
        assert read_pid(path) == os.getpid()     # the loser removed nothing
    assert not path.exists()


def test_a_pidfile_left_by_a_dead_daemon_is_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "pnsd.pid"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    path.write_text(dead.stdout)               # a killed daemon's file: no lock on it any more
    with Pidfile(path):
        assert read_pid(path) == os.getpid()


def test_a_pidfile_whose_holder_died_is_free_at_once(tmp_path: Path) -> None:
    """The lock goes with its holder: a SIGKILLed daemon leaves its file, never the lock."""
    path = tmp_path / "pnsd.pid"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from pnsd.pidfile import "
         "Pidfile; p = Pidfile(Path(sys.argv[1])).__enter__(); print('in', flush=True); "
         "sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "in\n"
        with pytest.raises(Conflict), Pidfile(path):
            pass
        holder.kill()
        holder.wait(timeout=30)
        assert path.exists()
        with Pidfile(path):
            assert read_pid(path) == os.getpid()
    finally:
        holder.kill()
        holder.wait(timeout=30)
