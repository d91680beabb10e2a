"""A real pnsweb process in front of a real pnsd, for the console's browser tests.

pnsweb listens on port 0 (a free port the kernel picks) and says which in its first line; an
administrator and a plain user are configured. Both processes are stopped by the fixture that
starts them.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pnsweb.settings import hash_password
from tests.integration.conftest import DaemonProcess, child_env, spawn_web_daemon

ADMIN = ("ada", "ada-password")
USER = ("bob", "bob-password")
START = 30.0
_SERVING = re.compile(r"pnsweb serving (http://\S+?)/v0\.6/")


@dataclass
class ConsoleNode:
    pnsd: DaemonProcess
    web: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.web.poll() is None:
            self.web.terminate()
            self.web.wait(timeout=30)
        self.pnsd.terminate(timeout=60)


def start_console_node(root: Path, *, workers: int | None = None) -> ConsoleNode:
    """pnsd (with the demo PTS) and pnsweb with ADMIN (an administrator) and USER; pnsweb on
    ``workers`` processes when given (else its default: one per core)."""
    pnsd = spawn_web_daemon(root / "home")
    with pnsd.config.open("a") as config:
        config.write(f'\n[[pnsweb.users]]\nname = "{USER[0]}"\n'
                     f'password_hash = "{hash_password(USER[1])}"\n')
    out = root / "pnsweb.out"
    with out.open("wb") as log:
        web = subprocess.Popen(
            [sys.executable, "-m", "pnsweb", "--config", str(pnsd.config), "-u", ADMIN[0],
             "-p", ADMIN[1], "-i", "127.0.0.1", "-o", "0",
             *(["--workers", str(workers)] if workers is not None else [])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=child_env(pnsd.home), start_new_session=True)
    deadline = time.monotonic() + START
    while time.monotonic() < deadline:
        found = _SERVING.search(out.read_text(errors="replace"))
        if found:
            return ConsoleNode(pnsd, web, found.group(1))
        if web.poll() is not None:
            break
        time.sleep(0.05)    # another process starting: its output is the only sign
    web.kill()
    pnsd.terminate()
    raise RuntimeError(f"pnsweb did not start: {out.read_text(errors='replace')[-2000:]}")
