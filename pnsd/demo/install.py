"""Putting the packaged hello scripts into a PNS home (what the reference's `installpns` did).

Owns the copying only; it is called at daemon start (missing scripts only) and by the
``demo.reset`` operation (the reference's ``PUT /testinit``), which keeps a replaced script
as ``<name>.save``.
"""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

from pnsd.demo import SCRIPTS_DIR

SCRIPTS = ("initPTS", "configPTS", "runPTS", "cleanPTS", "sleepPTS")


def install_scripts(home: Path, *, restore: bool = False) -> list[str]:
    """Copy missing scripts into ``home``; with ``restore`` also replace changed ones.

    Returns the names written. A replaced script is kept beside it as ``<name>.save``.
    """
    written = []
    for name in SCRIPTS:
        source, target = SCRIPTS_DIR / name, home / name
        if target.exists():
            if not restore or filecmp.cmp(source, target, shallow=False):
                continue
            target.replace(home / f"{name}.save")
        shutil.copy2(source, target)
        written.append(name)
    return written
