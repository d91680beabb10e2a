"""The pidfile: one daemon per home, and how ``pnsd stop`` and ``pnsd status`` find it."""

from __future__ import annotations

import contextlib
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
    """Written on enter (refusing if a live daemon holds it), removed on exit."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Pidfile:
        other = read_pid(self.path)
        if other is not None and other != os.getpid():
            raise Conflict(f"pnsd is already running with pid {other} ({self.path})", pid=other)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_suffix(".tmp")
        temp.write_text(f"{os.getpid()}\n")
        temp.replace(self.path)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if read_pid(self.path) == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
