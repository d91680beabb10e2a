"""A ``pnsd`` home for the faults, its daemon and its ``pnsweb``, and the search for leftovers.

Owns a node (a home with its config and key, the daemon and web front-end serving it, started
and stopped through the shared process helpers in ``harness.procs``), the per-process sample a
soak takes (RSS, open fds, children) and the end of a fault's leftovers (any process whose
command line or environment names the fault's private directory). Must not know what a fault
does.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness.procs import (
    PYTHON,
    Child,
    child_env,
    children,
    fd_count,
    free_port,
    naming,
    rss_bytes,
    wait_until,
)
from protocols.client import AsyncClient, Client
from protocols.errors import PnsError

START_TIMEOUT = 30.0
WEB_USER = ("fault", "fault-password")
DAEMON_GRACE = 20.0     # pnsd gives running jobs 10 s on SIGTERM


class Node:
    """A pnsd home under ``root/name`` with its config and key, and the processes serving it."""

    def __init__(self, root: Path, name: str, *, pnsd: str = "", pnsweb: str = "",
                 pts: str = "") -> None:
        self.home = root / name
        self.home.mkdir(parents=True, exist_ok=True)
        self.key_file = self.home / "secret.key"
        if not self.key_file.exists():
            # made before the daemon starts, so the first ping cannot race its creation
            fd = os.open(self.key_file, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        self.key = self.key_file.read_bytes().strip()
        self.endpoint = f"ipc://{self.home}/run/pnsd.sock"
        self.config = self.home / "pnsd.toml"
        self.config.write_text(
            f"[pnsd]\nhome = {str(self.home)!r}\ndemo = false\nlog_level = \"warning\"\n"
            f"{pnsd}\n[pnsweb]\n{pnsweb}\n{ECHO_SLEEP}\n{pts}\n")
        self.daemon: Child | None = None
        self.web: Child | None = None
        self.web_port = 0

    def env(self) -> dict[str, str]:
        return child_env(HOME=str(self.home), PNS_HOME=str(self.home))

    # -- pnsd ----------------------------------------------------------------------------

    def start_daemon(self) -> Child:
        argv = [PYTHON, "-m", "pnsd", "start", "--home", str(self.home),
                "--config", str(self.config)]
        self.daemon = Child("pnsd", argv, log=self.home / "pnsd.out", env=self.env())
        wait_until(self.pingable, timeout=START_TIMEOUT, what="pnsd", child=self.daemon)
        return self.daemon

    def pingable(self) -> bool:
        try:
            with self.client(timeout=1.0) as client:
                client.call("ping", {})
            return True
        except PnsError:
            return False

    def client(self, timeout: float = 30.0) -> Client:
        return Client(self.endpoint, key=self.key, timeout=timeout)

    def async_client(self, timeout: float = 30.0) -> AsyncClient:
        return AsyncClient(self.endpoint, key=self.key, timeout=timeout)

    # -- pnsweb --------------------------------------------------------------------------

    def start_web(self, port: int = 0) -> Child:
        self.web_port = port or self.web_port or free_port()
        argv = [PYTHON, "-m", "pnsweb", "--config", str(self.config), "-u", WEB_USER[0],
                "-p", WEB_USER[1], "-i", "127.0.0.1", "-o", str(self.web_port)]
        self.web = Child("pnsweb", argv, log=self.home / "pnsweb.out", env=self.env())
        wait_until(self.web_ready, timeout=START_TIMEOUT, what="pnsweb", child=self.web)
        return self.web

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def web_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1.0) as reply:
                return bool(reply.status == 200)
        except urllib.error.HTTPError:
            return True     # it answers; health is another matter
        except OSError:
            return False

    def stop(self) -> None:
        """pnsweb first, then pnsd, each on the ladder."""
        if self.web is not None:
            self.web.stop(grace=10.0)
        if self.daemon is not None:
            self.daemon.stop(grace=DAEMON_GRACE)


ECHO_SLEEP = """
[pts.echo]
mode = "inproc"
entry = "pnsd.demo:echo"
version = "1"
inline = true
queue = 1024
concurrency = 64

[pts.sleep]
mode = "inproc"
entry = "pnsd.demo:sleep"
version = "1"
concurrency = 8
queue = 256
timeout = 600
"""


def leftovers(marker: Path) -> list[tuple[int, str]]:
    """Live processes (other than us) whose command line or environment names ``marker``."""
    return naming(marker)


def kill_leftovers(marker: Path, *, settle: float = 5.0) -> list[tuple[int, str]]:
    """Give exiting processes ``settle`` seconds, then SIGKILL what is left; what was found."""
    deadline = time.monotonic() + settle
    found = leftovers(marker)
    while found and time.monotonic() < deadline:
        time.sleep(0.1)     # orphaned workers notice their parent died and exit on their own
        found = leftovers(marker)
    for pid, _ in found:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return found


def sample(pid: int, *, tree: bool = False) -> dict[str, Any]:
    """What a soak watches of one process: RSS in KiB, open fds, live children; with
    ``tree``, RSS and fds summed over it and its children (pnsweb serves from children)."""
    kids = children(pid)
    pids = [pid, *kids] if tree else [pid]
    rss_values = [rss_bytes(p) for p in pids]
    fd_values = [fd_count(p) for p in pids]
    rss = None if rss_values[0] is None else sum(v for v in rss_values if v is not None)
    fds = None if fd_values[0] is None else sum(v for v in fd_values if v is not None)
    return {"rss_kb": None if rss is None else rss // 1024, "fds": fds, "children": len(kids)}
