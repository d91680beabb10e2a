"""Giving freed memory back to the system after large payloads (glibc; elsewhere a no-op).

glibc keeps what a process frees, for reuse, in the arena of the thread that freed it, and
raises its mapping threshold to the largest block freed (up to 32 MiB), so the copies of one
large message stay resident after it is gone. Measured here: after ten 16 MiB ``/v1`` echo
runs an idle pnsweb stayed at 103 MB resident (64 MB after start), and a string-valued 16 MiB
run left pnsd at 102 MB (38 MB), though almost none of it was in use. Two calls fix that:

- :func:`map_large_blocks`: blocks of MAP_ABOVE bytes or more get mappings of their own,
  unmapped when freed, whatever was freed before (a fixed threshold);
- :class:`Trimmer` (driven by :func:`keep_trimmed` in pnsd and pnsweb): once resident memory
  has grown by TRIM_GROWTH above its floor, ``malloc_trim`` hands every arena's free pages
  back.

Imports only the stdlib; Python 3.8 compatible.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from typing import Any, Callable, Optional, Tuple

__all__ = ["MAP_ABOVE", "TRIM_GROWTH", "Trimmer", "keep_trimmed", "map_large_blocks",
           "resident", "trim"]

MAP_ABOVE = 1 << 20          # bytes: a block this large is mapped on its own
TRIM_GROWTH = 32 << 20       # bytes of growth in resident memory that call for a trim
_M_MMAP_THRESHOLD = -3       # mallopt's parameter number (malloc.h)
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _glibc() -> Optional[ctypes.CDLL]:
    libc = ctypes.CDLL(None)   # the C library this process already runs on
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None              # not glibc (musl, say): nothing to tune
    return libc


_LIBC = _glibc()


def map_large_blocks() -> bool:
    """Fix glibc's mapping threshold at MAP_ABOVE; False where that cannot be done."""
    return _LIBC is not None and _LIBC.mallopt(_M_MMAP_THRESHOLD, MAP_ABOVE) == 1


def trim() -> bool:
    """Give the free pages of every arena back; True if any were."""
    return _LIBC is not None and _LIBC.malloc_trim(0) == 1


def resident() -> int:
    """This process's resident memory in bytes."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE


class Trimmer:
    """Trims when resident memory is ``growth`` bytes above the lowest seen; :meth:`check` is
    meant to be called once a second.

    A trim that gives back little found the memory in use (a large run still going, many jobs
    kept): the next one waits twice as many checks, up to ``longest``, so a daemon that really
    needs its memory is not trimmed every second.
    """

    def __init__(self, *, growth: int = TRIM_GROWTH, longest: int = 16,
                 measure: Callable[[], int] = resident, release: Callable[[], bool] = trim) -> None:
        self.growth = growth
        self.longest = longest
        self.measure = measure
        self.release = release
        self.floor = measure()
        self.wait = 1       # checks from one trim to the next
        self._skip = 0

    def check(self) -> Optional[Tuple[int, int]]:
        """Trim if due; returns resident bytes (before, after) when it trimmed."""
        if self._skip:
            self._skip -= 1
            return None
        before = self.measure()
        if before < self.floor + self.growth:
            self.floor = min(self.floor, before)
            self.wait = 1
            return None
        self.release()
        after = self.measure()
        freed_little = before - after < self.growth // 2
        self.wait = min(self.wait * 2, self.longest) if freed_little else 1
        self._skip = self.wait - 1
        return before, after


async def keep_trimmed(log: Callable[..., Any], *, every: float = 1.0) -> None:
    """Fix the mapping threshold, then look at resident memory every ``every`` seconds and
    trim when due (:class:`Trimmer`), until cancelled. Each trim is told to ``log`` (a
    structlog method, say) as ``memory_trimmed`` with the resident MB before and after."""
    map_large_blocks()
    trimmer = Trimmer()
    while True:
        await asyncio.sleep(every)
        trimmed = trimmer.check()
        if trimmed is not None:
            log("memory_trimmed", before_mb=round(trimmed[0] / 2**20, 1),
                after_mb=round(trimmed[1] / 2**20, 1))
