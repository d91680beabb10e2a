"""``make run``: pnsd (started detached unless it runs) and pnsweb in the foreground, stopped
together, however ``make run`` is stopped.

Both stop on SIGTERM, SIGINT or SIGHUP to this process, on Ctrl-C in the terminal, when make
dies (a parent-death signal), and when make alone got SIGINT or SIGHUP: make does not pass
those on to its recipe, it waits for it with the signal blocked, which ``/proc/PPID/status``
shows (SigBlk). pnsweb's password goes through ``$PNSWEB_PASSWORD``, never a command line.

Usage: python scripts/devrun.py HOME PORT USER   (the password in $PNSWEB_PASSWORD)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
FATAL = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)
PR_SET_PDEATHSIG = 1
POLL = 0.2       # seconds between looks at pnsweb and at make


def main(argv: list[str]) -> int:
    home, port, user = argv
    parent = os.getppid()
    stopping: list[int] = []
    for signum in FATAL:
        signal.signal(signum, lambda signum, _frame: stopping.append(signum))
    with contextlib.suppress(OSError, AttributeError):      # Linux: a dying make says so
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    pnsd = [str(BIN / "pnsd"), "--home", home]
    if subprocess.run([*pnsd[:1], "status", *pnsd[1:]], capture_output=True,
                      check=False).returncode != 0:
        subprocess.run([*pnsd[:1], "start", "--detach", *pnsd[1:]], stdout=subprocess.DEVNULL,
                       check=True)
    web = subprocess.Popen([str(BIN / "pnsweb"), "-u", user, "-o", port])
    try:
        while web.poll() is None and not stopping and not _parent_stopping(parent):
            time.sleep(POLL)    # polling: make's signals leave no other trace to wait on
    finally:
        _stop(web)
        subprocess.run([*pnsd[:1], "stop", *pnsd[1:]], capture_output=True, check=False)
    return 0 if stopping or web.returncode in (0, -signal.SIGTERM) else 1


def _parent_stopping(parent: int) -> bool:
    """True once make is gone or handling a fatal signal (blocked while it waits for us)."""
    if os.getppid() != parent:
        return True
    try:
        status = Path(f"/proc/{parent}/status").read_text()
    except OSError:
        return False
    blocked = next((line.split()[1] for line in status.splitlines()
                    if line.startswith("SigBlk:")), "0")
    return any(int(blocked, 16) & (1 << (signum - 1)) for signum in FATAL)


def _stop(web: subprocess.Popen[bytes]) -> None:
    if web.poll() is None:
        web.terminate()
        try:
            web.wait(timeout=15)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait(timeout=15)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
