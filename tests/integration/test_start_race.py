"""Two ``pnsd start`` on one home at the same instant: exactly one wins, the other leaves.

Both processes are held at a barrier (a pipe the test closes once both wait on it) where they
take the pidfile, so they reach it together. The loser must say so in one
``pnsd: conflict:`` line and must not touch what the winner owns: its socket, its pidfile.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import DaemonProcess, child_env, write_config

pytestmark = pytest.mark.slow

# ``pnsd start``, held where it takes the pidfile: it reports ready on one pipe, then blocks
# until the other reaches end of file, then goes on into the pidfile.
HELD_START = """
import os, sys
from pnsd.cli import main
from pnsd.pidfile import Pidfile
ready, go = int(sys.argv[1]), int(sys.argv[2])
take = Pidfile.__enter__
def held(self):
    os.write(ready, b"r")
    os.close(ready)
    os.read(go, 1)
    return take(self)
Pidfile.__enter__ = held
sys.exit(main(sys.argv[3:]))
"""


def start_together(home: Path, config: Path, count: int) -> list[subprocess.Popen[str]]:
    """``count`` ``pnsd start`` processes, released at once when all of them are waiting."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    argv = ["start", "--home", str(home), "--config", str(config)]
    starts = [subprocess.Popen(
        [sys.executable, "-c", HELD_START, str(ready_w), str(go_r), *argv],
        pass_fds=(ready_w, go_r), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env=child_env(home), start_new_session=True)
        for _ in range(count)]
    os.close(ready_w)
    os.close(go_r)
    try:
        waiting = b""
        while len(waiting) < count:
            assert select.select([ready_r], [], [], 60)[0], "the starts never reached the barrier"
            chunk = os.read(ready_r, count)
            assert chunk, "a start exited before the barrier"
            waiting += chunk
    finally:
        os.close(ready_r)
        os.close(go_w)          # end of file on the barrier: every start goes now
    return starts


@pytest.mark.parametrize("attempt", range(3))
def test_of_two_concurrent_starts_one_wins_and_the_loser_touches_nothing(
        tmp_path: Path, attempt: int) -> None:
    home = tmp_path / "home"
    config = write_config(home)
    home.chmod(0o700)        # already private: the daemon has nothing to log on stderr
    starts = start_together(home, config, 2)
    try:
        loser = next(iter(_first_exit(starts)))
        winner = next(start for start in starts if start is not loser)
        assert loser.returncode != 0
        assert loser.stderr is not None
        message = loser.stderr.read()
        assert message.startswith("pnsd: conflict: "), message
        assert message.count("\n") == 1 and "Traceback" not in message
        node = DaemonProcess(winner, home, config)
        with node.client(timeout=30.0) as client:       # its socket is still its own
            assert client.call("run", {"pts": "echo", "input": attempt})["result"] == attempt
        assert node.settings.pidfile.read_text().strip() == str(winner.pid)
        assert node.terminate() == 0
        assert not node.settings.pidfile.exists()
    finally:
        for start in starts:
            if start.poll() is None:
                start.kill()
            start.wait(timeout=30)
            if start.stderr is not None:
                start.stderr.close()


def _first_exit(starts: list[subprocess.Popen[str]]) -> list[subprocess.Popen[str]]:
    """The starts that have exited once one has, waiting for the first with a timeout.

    The winner serves until stopped; the loser exits on its own, so exactly one ends here."""
    deadline = time.monotonic() + 60
    while not (ended := [start for start in starts if start.poll() is not None]):
        assert time.monotonic() < deadline, "neither start exited: both think they own the home"
        time.sleep(0.05)   # another process's exit: no event to wait on here
    assert len(ended) == 1, "both starts exited"
    return ended
