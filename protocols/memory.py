"""Giving freed memory back to the system after large payloads (glibc; elsewhere a no-op).

glibc keeps what a process frees, for reuse, in the arena of the thread that freed it, and
raises its mapping threshold to the largest block freed (up to 32 MiB), so the copies of one
large message stay resident after it is gone. Measured here after ten 16 MiB ``/v1`` echo
runs: an idle pnsweb stayed at 103 MB resident (64 MB after start) and pnsd, for
string-valued runs, at 102 MB (38 MB). :class:`Trimmer` (driven by :func:`keep_trimmed` in pnsd
and pnsweb) calls ``malloc_trim`` once resident memory has grown by TRIM_GROWTH above its
floor, which hands every arena's free pages back: 67 and 54 MB.

That does not lower the peak while large messages come one after another: each thread that
allocates (the event loop, ZeroMQ's I/O thread, a parsing thread) keeps its own arena's
high-water mark. :func:`map_large_blocks` fixes the mapping threshold at LARGE_BLOCK (4 MiB,
above the 1 MiB that a fixed 1 MiB threshold made a fifth slower in the fourth pass) and the
trim threshold at what glibc's own rise gave (so that small requests are not slowed, as they
were with a fixed mapping threshold alone), so that a large block is unmapped when freed.
pnsweb asks for it (its 16 MiB ``/v1`` peak: 71 -> 54 MB above idle); pnsd does not (its peak
did not move, and faulting in fresh pages for every 16 MiB message made its direct round trip
twice as slow). The figures: bench/FINDINGS.md, issue 16 memory.

Imports only the stdlib; Python 3.8 compatible.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from typing import Any, Callable, Optional, Tuple

__all__ = ["KEEP_FREE", "LARGE_BLOCK", "SMALL_GROWTH", "TRIM_GROWTH", "Trimmer", "keep_trimmed",
           "map_large_blocks", "resident", "trim"]

TRIM_GROWTH = 32 << 20       # bytes of growth in resident memory that call for a trim
SMALL_GROWTH = 4 << 20       # ... once large blocks are mapped on their own
LARGE_BLOCK = 4 << 20        # blocks this large are mapped on their own, unmapped when freed
KEEP_FREE = 32 << 20         # free bytes at the top of an arena kept before it is trimmed
_M_TRIM_THRESHOLD = -1       # mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _glibc() -> Optional[ctypes.CDLL]:
    libc = ctypes.CDLL(None)   # the C library this process already runs on
    if not hasattr(libc, "malloc_trim"):
        return None              # not glibc (musl, say): nothing to tune
    return libc


_LIBC = _glibc()


def trim() -> bool:
    """Give the free pages of every arena back; True if any were."""
    return _LIBC is not None and _LIBC.malloc_trim(0) == 1


def map_large_blocks(threshold: int = LARGE_BLOCK, keep: int = KEEP_FREE) -> bool:
    """Have every block of at least ``threshold`` bytes mapped on its own, and unmapped as
    soon as it is freed, whichever thread allocates or frees it; True if glibc took it.

    By default glibc raises that threshold to the largest block freed so far: after one
    16 MiB message each later one is carved from an arena (one per thread that allocates:
    the event loop, ZeroMQ's I/O thread, the store's writer, the parsing threads) and stays
    resident there once freed, so a process's peak counts every arena's high-water mark.
    Fixing the threshold also stops glibc raising the trim threshold with it: ``keep`` sets
    it to what that rise gave, so that the small blocks of every request are not handed back
    and faulted in again at each turn (a fixed threshold without it made small requests a
    third slower: bench/FINDINGS.md, fourth pass).
    """
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, threshold)
                and _LIBC.mallopt(_M_TRIM_THRESHOLD, keep))


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


async def keep_trimmed(log: Callable[..., Any], *, every: float = 1.0,
                       large_blocks: bool = False) -> None:
    """Look at resident memory every ``every`` seconds and trim when due (:class:`Trimmer`),
    until cancelled. Each trim is told to ``log`` (a structlog method, say) as
    ``memory_trimmed`` with the resident MB before and after. With ``large_blocks``, first
    has large blocks mapped on their own (:func:`map_large_blocks`); what the arenas keep
    then is small blocks only (1 MiB bodies, say), trimmed from SMALL_GROWTH on. Returns at
    once where there is no ``malloc_trim`` (not glibc)."""
    if _LIBC is None:
        return
    growth = TRIM_GROWTH
    if large_blocks and map_large_blocks():
        growth = SMALL_GROWTH
    trimmer = Trimmer(growth=growth)
    while True:
        await asyncio.sleep(every)
        trimmed = trimmer.check()
        if trimmed is not None:
            log("memory_trimmed", before_mb=round(trimmed[0] / 2**20, 1),
                after_mb=round(trimmed[1] / 2**20, 1))
