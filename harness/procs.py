"""Real processes for the benchmarks, the fault injection and the integration tests.

Owns starting a child in a session of its own (so its process group can be signalled as one),
the stop ladder (SIGTERM to the group, a grace period, SIGKILL to the group), readiness polling,
free TCP ports, and what is seen of other processes: whether one runs, its command line, memory,
open files, CPU time, children, group, and the search for processes naming a directory.
What is seen comes from psutil, which reads ``/proc`` for us and treats a process that vanishes
mid-read as gone. Must not know what a child does: pnsd homes and daemons are the callers'.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent   # the repository: children import from it
PYTHON = sys.executable
_GONE = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child that imports from the repository."""
    env = dict(os.environ)
    env.pop("PNS_CONFIG", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


class Child:
    """One started process (a session and process group of its own) with its log file."""

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

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def kill_hard(self) -> None:
        """SIGKILL the process alone (its workers, in sessions of their own, are not hit)."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM the group, wait ``grace``, SIGKILL the group, then any extra pids; the exit
        status (None if it would not die)."""
        if self.alive():
            signal_group(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        signal_group(self.pid, signal.SIGKILL)    # stragglers of the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for pid in self.extra_pids:
            stop_pid(pid, expect="protocols.worker")
        return self.process.returncode

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_pid(pid: int, *, expect: str, grace: float = 2.0) -> None:
    """Stop a process we know of (and its group) if it still runs ``expect``; a pid reused by
    another program is left alone."""
    if expect not in cmdline(pid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and expect in cmdline(pid):
        time.sleep(0.05)    # another process's exit: no event to wait on
    if expect in cmdline(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# -- readiness ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str,
               child: Child | None = None) -> None:
    """Poll ``check`` (a starting process offers no event to wait on) until true or timeout;
    fail at once, with the end of its log, if ``child`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited while starting:\n{child.tail()}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    tail = child.tail() if child is not None else ""
    raise TimeoutError(f"{what} not ready within {timeout:.0f} s\n{tail}")


def ipc_ready(endpoint: str) -> bool:
    return Path(endpoint.removeprefix("ipc://")).exists()


def http_ready(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1.0) as reply:
        return bool(reply.status == 200)


# -- other processes ---------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        return psutil.Process(pid).status() not in _GONE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def cmdline(pid: int) -> str:
    """The command line of live process ``pid``, arguments joined by spaces; "" if gone."""
    try:
        process = psutil.Process(pid)
        return "" if process.status() in _GONE else " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return ""


def rss_bytes(pid: int) -> int | None:
    """Resident set size, None if the process is gone."""
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def fd_count(pid: int) -> int | None:
    """Open file descriptors, None if the process is gone."""
    try:
        return int(psutil.Process(pid).num_fds())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``; none if it is gone."""
    try:
        found = psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []
    return [child.pid for child in found if alive(child.pid)]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, theirs, and so on)."""
    try:
        found = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    return {child.pid for child in found if alive(child.pid)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads), 0 if it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0
    return float(times.user + times.system)


class CpuTrees:
    """CPU seconds of some process trees (each root with its descendants), cheap to read often.

    Finding a tree's members means reading every process's parent, milliseconds on a busy
    machine: it is done for all trees at once, and again only every ``refresh`` seconds. In
    between, only the members' own times are read, so a sampler can call this every few tens
    of milliseconds without taking the CPU it measures.
    """

    def __init__(self, roots: Iterable[int], *, refresh: float = 1.0) -> None:
        self.roots = list(roots)
        self.refresh = refresh
        self._members: dict[int, list[psutil.Process]] = {}
        self._found = -refresh

    def seconds(self, root: int | None = None) -> float:
        """User + system CPU of the tree of ``root`` (of every tree when None), live members."""
        if time.monotonic() - self._found >= self.refresh:
            self._find()
        total = 0.0
        for tree_root in self.roots if root is None else [root]:
            for process in self._members.get(tree_root, []):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    times = process.cpu_times()
                    total += times.user + times.system
        return total

    def _find(self) -> None:
        parents: dict[int, list[int]] = {}
        for process in psutil.process_iter(["ppid"], ad_value=None):
            parents.setdefault(process.info["ppid"], []).append(process.pid)
        known = {p.pid: p for members in self._members.values() for p in members}
        for root in self.roots:
            tree, todo = [root], [root]
            while todo:
                found = parents.get(todo.pop(), [])
                tree += found
                todo += found
            members = []
            for pid in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    members.append(known.get(pid) or psutil.Process(pid))
            self._members[root] = members
        self._found = time.monotonic()


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid``."""
    members = []
    for pid in psutil.pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pgid and alive(pid):
                members.append(pid)
    return members


def naming(marker: str | Path, *, environ: bool = True) -> list[tuple[int, str]]:
    """Live processes other than this one whose command line (or environment, unless told
    not to look there) names ``marker``: pid and the start of the command line."""
    needle = str(marker)
    found = []
    for process in psutil.process_iter(["cmdline", "environ", "status"], ad_value=None):
        info = process.info
        if process.pid == os.getpid() or info["status"] in _GONE:
            continue
        command = " ".join(info["cmdline"] or ())
        names = needle in command or (environ and any(
            needle in f"{key}={value}" for key, value in (info["environ"] or {}).items()))
        if names:
            found.append((process.pid, command[:160]))
    return found
