"""``pnsd`` at a real terminal (a pseudo-terminal): tables, live progress, the Ctrl-C question.

Each command runs under ``pty.fork``, so stdin, stdout and stderr are a terminal and Ctrl-C is
the terminal's own (the byte 0x03 turned into SIGINT by the line discipline). The tests wait
for what the terminal shows, with a deadline, never for a guessed time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.conftest import DaemonProcess, child_env

pytestmark = pytest.mark.slow
DEADLINE = 30.0
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


class Terminal:
    """One ``pnsd`` command on a pseudo-terminal of 120 x 40."""

    def __init__(self, daemon: DaemonProcess, *args: str) -> None:
        argv = [sys.executable, "-m", "pnsd", *args, "--home", str(daemon.home),
                "--config", str(daemon.config)]
        env = {**child_env(daemon.home), "TERM": "xterm-256color", "COLUMNS": "120"}
        pid, fd = pty.fork()
        if pid == 0:     # the child: size its terminal, then become pnsd
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
            os.execve(sys.executable, argv, env)
        self.pid, self.fd = pid, fd
        self.raw = b""
        self.status: int | None = None

    @property
    def text(self) -> str:
        return _ESCAPES.sub("", self.raw.decode(errors="replace"))

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout``; False once the terminal is closed."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:           # EIO: the child closed its side (it exited)
            return False
        self.raw += data
        return bool(data)

    def expect(self, pattern: str, timeout: float = DEADLINE) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text)
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(left):
                found = re.search(pattern, self.text)
                if found:
                    return found
                raise AssertionError(f"{pattern!r} not shown; the terminal shows:\n{self.text}")

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = DEADLINE) -> int:
        """The exit status, once the command ends (reading its output to the end)."""
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            if time.monotonic() > deadline:
                raise AssertionError(f"still running; the terminal shows:\n{self.text}")
        _pid, status = os.waitpid(self.pid, 0)
        self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def close(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def terminal(daemon_process: DaemonProcess) -> Iterator[Any]:
    opened: list[Terminal] = []

    def start(*args: str) -> Terminal:
        opened.append(Terminal(daemon_process, *args))
        return opened[-1]

    yield start
    for one in opened:
        one.close()


def job_status(daemon: DaemonProcess, job_id: str) -> str:
    with daemon.client() as client:
        return str(client.call("job.status", {"job": job_id})["job"]["status"])


def test_run_shows_live_progress_then_prints_the_result(terminal: Any) -> None:
    shell = terminal("run", "sleep", "--input", '{"seconds": 1.5}')
    shell.expect(r"sleep .*\d+%.*slept \d")          # the bar with the PTS's own message
    shell.expect(r'"slept": 1\.5')                  # then the result, as JSON
    assert shell.wait() == 0


def test_ctrl_c_during_run_cancels_the_job_when_told_to(
        terminal: Any, daemon_process: DaemonProcess) -> None:
    shell = terminal("run", "sleep", "--input", '{"seconds": 60}')
    shell.expect(r"slept \d")
    shell.send(b"\x03")
    job_id = shell.expect(r"Job ([0-9a-f]{32}) is still running: \[c\]ancel").group(1)
    shell.send(b"c\r")
    shell.expect(rf"Job {job_id} cancelled \(dismissed\)")
    assert shell.wait() == 130
    assert job_status(daemon_process, job_id) == "dismissed"


def test_ctrl_c_during_run_can_leave_the_job_running_and_says_how_to_watch_it(
        terminal: Any, daemon_process: DaemonProcess) -> None:
    shell = terminal("run", "sleep", "--input", '{"seconds": 60}')
    shell.expect(r"slept \d")
    shell.send(b"\x03")
    job_id = shell.expect(r"Job ([0-9a-f]{32}) is still running").group(1)
    shell.send(b"l\r")
    shell.expect(rf"pnsd jobs watch {job_id}")
    assert shell.wait() == 130
    assert job_status(daemon_process, job_id) == "running"
    watching = terminal("jobs", "watch", job_id)
    watching.expect(r"sleep .*\d+%.*slept \d")
    with daemon_process.client() as client:
        client.call("job.cancel", {"job": job_id})
    watching.expect(rf"job {job_id} dismissed")
    assert watching.wait() == 0


def test_status_and_lists_are_tables_at_a_terminal_and_json_when_asked(
        terminal: Any, daemon_process: DaemonProcess) -> None:
    status = terminal("status")
    status.expect(r"PTS\s*┃\s*mode")
    status.expect(r"hello-worker\s*│\s*worker\s*│.*ready.*alive")
    assert status.wait() == 0
    listing = terminal("pts", "list")
    listing.expect(r"echo\s*│\s*inproc")
    assert listing.wait() == 0
    with daemon_process.client() as client:
        client.call("run", {"pts": "echo", "input": {"x": 1}})
    jobs = terminal("jobs", "list")
    jobs.expect(r"echo\s*│\s*successful\s*│\s*100 %")
    jobs.expect(r"\d+ of \d+ jobs, newest first")
    assert jobs.wait() == 0
    as_json = terminal("pts", "list", "--json")
    assert as_json.wait() == 0
    assert "echo" in {entry["name"] for entry in json.loads(as_json.text)}
