"""What a previous life of the daemon left behind: its process groups, sockets and job dirs.

Owns the ledger of the process groups the daemon starts (one file per group under
``run/groups/``, named by the group id and holding the boot id and the leader's start time, so
a recycled pid is never taken for one of ours), ending the groups a killed daemon left running,
and removing the worker sockets, key files and process-mode job dirs that died with it. It runs
at start, after the pidfile proved no other daemon owns the home. Everything here blocks:
callers run it in a thread. It must not start processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

STALE_PATTERNS = ("w-*",)    # a worker generation's socket, key file and library dir in run/


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_time(pid: int) -> str | None:
    """The start time of live process ``pid`` (clock ticks since boot), None if gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()    # state is field 3, starttime field 22
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


class GroupLedger:
    """The process groups started by this daemon and not yet known to be gone."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._boot = boot_id()

    def record(self, pgid: int) -> None:
        """Note group ``pgid`` (its leader must still run for its start time to be known)."""
        started = start_time(pgid)
        if started is None:
            return      # gone already: nothing of it can be left behind
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        temp = self.directory / f".{pgid}.tmp"
        temp.write_text(f"{self._boot} {started}\n")
        temp.replace(self.directory / str(pgid))

    def forget(self, pgid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / str(pgid)).unlink()

    def end_leftovers(self) -> list[int]:
        """SIGKILL every recorded group that still runs; empty the ledger. The ids killed."""
        killed: list[int] = []
        if not self.directory.is_dir():
            return killed
        for entry in self.directory.iterdir():
            if entry.name.isdigit() and self._still_ours(int(entry.name), entry):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
            entry.unlink(missing_ok=True)
        return killed

    def _still_ours(self, pgid: int, entry: Path) -> bool:
        """True when group ``pgid`` has live members and is the one recorded.

        A leader that still runs must have the recorded start time (else its pid was reused).
        A group whose leader is gone keeps its id while any member lives, and the kernel never
        gives a live group's id to a new process: its members are the ones we started.
        """
        try:
            booted, started = entry.read_text().split()
        except (OSError, ValueError):
            return False
        if booted != self._boot:
            return False        # recorded before a reboot: every process of it is gone
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        leader = start_time(pgid)
        return leader is None or leader == started


@dataclass
class Leftovers:
    """Where a previous life's leftovers live: the group ledger, run/ and the work areas."""

    ledger: GroupLedger
    run_dir: Path
    work_dir: Path
    removed: list[str] = field(default_factory=list)

    def clean(self) -> None:
        """End the recorded groups, then remove stale worker files and every work area."""
        killed = self.ledger.end_leftovers()
        for pattern in STALE_PATTERNS:
            for path in self.run_dir.glob(pattern):
                self._remove(path)
        for path in self.work_dir.glob("*/gen-*"):     # only what the hosts make there
            self._remove(path)
        if killed or self.removed:
            log.warning("leftovers_cleaned", groups_killed=killed, removed=len(self.removed))

    def _remove(self, path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        self.removed.append(str(path))
