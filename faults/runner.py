"""Running one fault: its private directory, its time, its leftovers.

Owns :class:`Context` (what a fault may use: a private directory, the quick flag, soak counts)
and :func:`run_fault`, which times the fault, turns a harness exception into a failed row
(never hides it), and afterwards searches ``/proc`` for processes that still name the fault's
directory: any found are killed and fail the row.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faults.procs import kill_leftovers
from faults.report import Row


@dataclass(frozen=True)
class Context:
    dir: Path                 # private to this fault; removed afterwards
    quick: bool = False
    soak_requests: int = 20_000

    def pick(self, full: int, quick: int) -> int:
        return quick if self.quick else full


FaultFn = Callable[[Context], Row]


@dataclass(frozen=True)
class Fault:
    name: str
    title: str
    run: FaultFn


def run_fault(fault: Fault, *, quick: bool, soak_requests: int) -> Row:
    # short: ipc socket paths (sun_path, 108 bytes) live under it
    directory = Path(tempfile.mkdtemp(prefix=f"pnsf-{fault.name[:8]}-"))
    started = time.monotonic()
    try:
        row = fault.run(Context(directory, quick=quick, soak_requests=soak_requests))
    except Exception as exc:  # the suite's boundary: a harness error fails the row, visibly
        lines = [line for line in str(exc).splitlines() if line.strip()]
        summary = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1].strip()}"
        row = Row(fault.name, broken=f"{type(exc).__name__}: {summary}"[:300])
        row.note(traceback.format_exc(limit=3).replace("\n", " | ")[-400:])
    row.seconds = time.monotonic() - started
    left = kill_leftovers(directory)
    if left:
        row.broken = (row.broken + "; " if row.broken else "") + (
            f"{len(left)} process(es) left behind: "
            + ", ".join(f"{pid} {cmd[:80]}" for pid, cmd in left[:3]))
    shutil.rmtree(directory, ignore_errors=True)
    return row
