"""Starting and stopping the processes a benchmark needs, and reading their memory.

Owns the process ladder used everywhere in ``bench``: every child runs in its own session
(so its process group can be signalled as one), and :meth:`Child.stop` goes SIGTERM on the
group, a grace period, then SIGKILL on the group. Also: free TCP ports, readiness polling,
and VmRSS from ``/proc``. Must not know what a child does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent   # the repository: children import from it
PYTHON = sys.executable


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PNS_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


class Child:
    """One started process (and its process group), with its log file."""

    def __init__(self, name: str, argv: Sequence[str], *, log: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env or child_env(), cwd=cwd or ROOT, start_new_session=True)
        self.extra_pids: set[int] = set()   # processes in groups of their own (pnsd workers)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the group, wait ``grace``, SIGKILL the group; then any extra pids."""
        if self.alive():
            _signal_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        _signal_group(self.pid, signal.SIGKILL)   # stragglers of the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        for pid in self.extra_pids:
            stop_pid(pid, expect="protocols.worker")


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_pid(pid: int, *, expect: str, grace: float = 2.0) -> None:
    """Stop a process we know of (and its group) if it still runs ``expect``; pid reuse safe."""
    if expect not in cmdline(pid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and expect in cmdline(pid):
        time.sleep(0.05)
    if expect in cmdline(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    state = proc_status(pid).get("State", "")
    if state.startswith("Z"):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def proc_status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def rss_mb(pid: int) -> float | None:
    """Resident set size in MB (10^6 bytes), or None if the process is gone."""
    value = proc_status(pid).get("VmRSS")
    if not value:
        return None
    return int(value.split()[0]) * 1024 / 1e6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str,
               child: Child | None = None) -> None:
    """Poll ``check`` (a starting process offers no event to wait on) until true or timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited while starting:\n{child.tail()}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    tail = child.tail() if child is not None else ""
    raise TimeoutError(f"{what} not ready within {timeout:.0f} s\n{tail}")


def ipc_ready(endpoint: str) -> bool:
    return Path(endpoint.removeprefix("ipc://")).exists()


def http_ready(url: str) -> bool:
    import urllib.request  # noqa: PLC0415 - only the orchestrator polls HTTP

    with urllib.request.urlopen(url, timeout=1.0) as reply:
        return bool(reply.status == 200)


def children(pid: int) -> list[int]:
    """Live child pids of ``pid`` (none if it is gone: processes come and go while we look)."""
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for task in tasks:
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu_seconds(current)
        todo += children(current)
    return total
