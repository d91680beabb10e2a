"""The job store's upkeep after deletes it makes by itself: the size bound held at write time
(``retention_bytes``) and what follows a trim or a cleanup.

Owns the :class:`pnsd.jobs.retention.SizeBound` of a store, the tasks that wait for the trims
it queues, and, once rows are gone, telling who keeps copies of those jobs (the forgetter) and
removing their blob files. It must not run SQL itself: the store queues each trim (behind the
write that crossed the bound, on its writer) and hands the outcome here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import Future

import structlog

from pnsd.errors import StorageError
from pnsd.jobs.retention import SizeBound

log = structlog.get_logger(__name__)

Victims = list[tuple[str, bool]]          # (id, had files) of each deleted job
Trimmed = tuple[Victims, int]             # ... and the bytes left


class Trimmer:
    """What a store holds against its bound, and the follow-up of what it deleted."""

    def __init__(self, limit: int | None, *, queue_trim: Callable[[int], Future[Trimmed]],
                 remove_files: Callable[[list[str]], Awaitable[None]]) -> None:
        self.bound = SizeBound(limit)
        self.tasks: set[asyncio.Task[None]] = set()
        # who is told the ids of jobs the store removed by itself, so no copy outlives them
        self.forget: Callable[[list[str]], None] = lambda job_ids: None
        self._queue_trim = queue_trim
        self._remove_files = remove_files

    def grew(self, size: int) -> None:
        """Count ``size`` more stored bytes; past the bound, queue a trim right behind the
        write that crossed it (the writer runs ops in order), so the bound holds at write
        time: the store exceeds it by at most the job just written."""
        target = self.bound.grow(size)
        if target is None:
            return
        future = self._queue_trim(target)
        task = asyncio.get_running_loop().create_task(
            self._trimmed(future, target, self.bound.grown), name="store-trim")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def removed(self, victims: Victims) -> None:
        """Rows of ``victims`` are gone: forget them, then remove the files of those that had."""
        self.forget([job_id for job_id, _files in victims])
        await self._remove_files([job_id for job_id, files in victims if files])

    async def close(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _trimmed(self, future: Future[Trimmed], target: int, grown: int) -> None:
        """Remove the files of the jobs a trim deleted; learn what the store holds now."""
        try:
            victims, left = await asyncio.wrap_future(future)
        except StorageError as exc:   # a full or broken store: the next write tries again
            self.bound.failed()
            log.error("retention_trim_failed", error=exc.message)
            return
        self.bound.trimmed(left, target, grown)
        await self.removed(victims)
        log.info("store_trimmed", deleted=len(victims), left=left, target=target)
