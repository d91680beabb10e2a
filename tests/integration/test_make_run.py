"""``make run``: stopping make stops pnsd and pnsweb, the port can be chosen, and the password
never shows on a command line."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from harness.procs import alive, cmdline, free_port, naming
from pnsd.pidfile import read_pid

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "not-in-ps-4711"


def _serving(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def _wait(check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():      # type: ignore[operator]
        assert time.monotonic() < deadline, f"not reached within {timeout} s"
        time.sleep(0.1)     # other processes' state: polled, with a deadline


def _web_pid(port: int) -> int | None:
    for pid, _ in naming(str(port), environ=False):
        argv = cmdline(pid).split()
        if any(part.endswith("pnsweb") for part in argv[:2]) and str(port) in argv:
            return pid
    return None


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_make_stops_pnsd_and_pnsweb(tmp_path: Path, signum: int) -> None:
    home, port = tmp_path / "home", free_port()
    env = {**os.environ, "PNS_HOME": str(home), "HOME": str(tmp_path)}
    env.pop("PNS_CONFIG", None)
    make = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"WEB_PORT={port}", "WEB_USER=ann",
         f"WEB_PASSWORD={PASSWORD}"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    web: int | None = None
    daemon: int | None = None
    try:
        _wait(lambda: _serving(port), timeout=60)
        daemon = read_pid(home / "run" / "pnsd.pid")
        web = _web_pid(port)
        assert daemon is not None and web is not None
        shown = [cmd for _, cmd in naming(PASSWORD, environ=False) if not cmd.startswith("make")]
        assert shown == []
        make.send_signal(signum)             # to make alone, not to its process group
        make.wait(timeout=60)
        _wait(lambda: not alive(web) and not alive(daemon), timeout=30)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(timeout=30)
        for pid in (web, daemon or read_pid(home / "run" / "pnsd.pid")):
            if pid is not None and alive(pid):
                os.kill(pid, signal.SIGKILL)
