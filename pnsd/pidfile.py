"""The pidfile: one daemon per home, and how ``pnsd stop`` and ``pnsd status`` find it.

Owns taking the home: the daemon holds an exclusive ``flock`` on the pidfile for its whole
life, so of two daemons started at once on one home exactly one wins; the other is refused
before it touches anything (socket, job store, leftovers) the winner owns. The kernel drops the
lock when the holder dies, however it dies, so a crash never leaves the home taken. Must not
signal or wait for processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from pnsd.errors import Conflict


def read_pid(path: Path) -> int | None:
    """The pid in ``path`` if that process is alive, else None."""
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if process_alive(pid) else None


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (exited, not yet reaped by its parent) is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat[stat.rfind(")") + 2] not in "ZX"


class Pidfile:
    """Locked and written on enter (refusing if another daemon holds it), removed on exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> Pidfile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._lock()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def _lock(self) -> int:
        """An open, exclusively locked descriptor of the file now at :attr:`path`.

        A daemon that stops removes the pidfile while it still holds the lock. A starter that
        opened the file just before that removal may then lock a file no longer in the home:
        it checks that the file it locked is still the one at the path, and tries again if not.
        """
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._taken() from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def _taken(self) -> Conflict:
        try:
            pid = int(self.path.read_text().strip())
        except (OSError, ValueError):     # the winner has not written its pid yet
            return Conflict(f"another pnsd is starting in this home ({self.path})")
        return Conflict(f"pnsd is already running with pid {pid} ({self.path})", pid=pid)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()     # while still locked: no other daemon can own this file yet
        os.close(self._fd)
        self._fd = None
