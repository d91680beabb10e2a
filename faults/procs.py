"""Real processes for the faults: a ``pnsd`` home, its daemon and its ``pnsweb``, and /proc.

Owns starting a daemon or web front-end in a session of its own (so its process group can be
signalled as one), stopping it on the ladder (SIGTERM to the group, grace, SIGKILL to the
group), readiness polling, and reading ``/proc``: RSS, open fds, child processes, and the
search for leftovers (any process whose command line or environment names a fault's private
directory). Must not know what a fault does.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from protocols.client import AsyncClient, Client
from protocols.errors import PnsError

ROOT = Path(__file__).resolve().parent.parent   # the repository: children import from it
PYTHON = sys.executable
START_TIMEOUT = 30.0
WEB_USER = ("fault", "fault-password")
DAEMON_GRACE = 20.0     # pnsd gives running jobs 10 s on SIGTERM


class Proc:
    """One started process (a session and process group of its own) with its log file."""

    def __init__(self, name: str, argv: list[str], *, log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd=ROOT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def kill_hard(self) -> None:
        """SIGKILL the process alone (its workers, in sessions of their own, are not hit)."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def stop(self, grace: float) -> int | None:
        """SIGTERM the group, wait ``grace``, SIGKILL the group; the exit status."""
        if self.alive():
            signal_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        signal_group(self.pid, signal.SIGKILL)    # stragglers of the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        return self.process.returncode

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


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
        self.daemon: Proc | None = None
        self.web: Proc | None = None
        self.web_port = 0

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PNS_CONFIG", None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env.update(HOME=str(self.home), PNS_HOME=str(self.home))
        return env

    # -- pnsd ----------------------------------------------------------------------------

    def start_daemon(self) -> Proc:
        argv = [PYTHON, "-m", "pnsd", "start", "--home", str(self.home),
                "--config", str(self.config)]
        self.daemon = Proc("pnsd", argv, log=self.home / "pnsd.out", env=self.env())
        wait_until(self.pingable, timeout=START_TIMEOUT, what="pnsd", proc=self.daemon)
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

    def start_web(self, port: int = 0) -> Proc:
        self.web_port = port or self.web_port or free_port()
        argv = [PYTHON, "-m", "pnsweb", "--config", str(self.config), "-u", WEB_USER[0],
                "-p", WEB_USER[1], "-i", "127.0.0.1", "-o", str(self.web_port)]
        self.web = Proc("pnsweb", argv, log=self.home / "pnsweb.out", env=self.env())
        wait_until(self.web_ready, timeout=START_TIMEOUT, what="pnsweb", proc=self.web)
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str,
               proc: Proc | None = None) -> None:
    """Poll ``check`` (a starting process offers no event to wait on) until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited while starting:\n{proc.tail()}")
        if check():
            return
        time.sleep(0.05)
    tail = proc.tail() if proc is not None else ""
    raise TimeoutError(f"{what} not ready within {timeout:.0f} s\n{tail}")


# -- /proc ------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def rss_kb(pid: int) -> int | None:
    value = proc_status(pid).get("VmRSS")
    return int(value.split()[0]) if value else None


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = []
    for other in _pids():
        status = proc_status(other)
        if status.get("PPid") == str(pid) and not status.get("State", "").startswith("Z"):
            found.append(other)
    return found


def is_gone(pid: int) -> bool:
    state = proc_status(pid).get("State", "")
    return not state or state.startswith(("Z", "X"))


def _names(pid: int, marker: bytes) -> bool:
    for part in ("cmdline", "environ"):
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{pid}/{part}").read_bytes():
                return True
    return False


def leftovers(marker: Path) -> list[tuple[int, str]]:
    """Live processes (other than us) whose command line or environment names ``marker``."""
    needle = str(marker).encode()
    found = []
    for pid in _pids():
        if pid == os.getpid() or is_gone(pid) or not _names(pid, needle):
            continue
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
            found.append((pid, cmd[:160]))
    return found


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


def sample(pid: int) -> dict[str, Any]:
    return {"rss_kb": rss_kb(pid), "fds": fd_count(pid), "children": len(children(pid))}
