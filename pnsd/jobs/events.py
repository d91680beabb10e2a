"""A job's event stream: status changes, progress and log lines, numbered for resumption.

Owns a bounded buffer of one job's events and the waiting of watchers. A watcher that comes
back with the last sequence number it saw gets every event still buffered after it; events
that fell out of the buffer are summarised by the job's current status. The buffer is made
when a watcher or a progress or log line first needs it: until then a status change is kept as
the one latest status (most runs are never watched, and report nothing but their status). No
I/O here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from pnsd.jobs.model import FINISHED, Job, Status

BUFFER = 256


class EventLog:
    def __init__(self, job_id: str, *, size: int = BUFFER) -> None:
        self.job_id = job_id
        self.seq = 0
        self._size = size
        self._events: deque[dict[str, Any]] | None = None    # made when first needed
        # the status kept while there is no buffer, as (seq, status, progress, message,
        # reason): a tuple per status change, its event made only if someone looks
        self._latest: tuple[int, Status, int, str, str] | None = None
        self._changed: asyncio.Event | None = None   # made when a watcher first waits
        self.closed = False

    @property
    def buffered(self) -> bool:
        """Whether anyone watched or anything was reported (else the latest status is all)."""
        return self._events is not None

    def _buffer(self) -> deque[dict[str, Any]]:
        events = self._events
        if events is None:
            events = self._events = deque(maxlen=self._size)
            if self._latest is not None:     # the statuses so far, summarised by the latest
                seq, status, progress, message, reason = self._latest
                events.append({"job": self.job_id, "seq": seq, "kind": "status",
                               "status": status.value, "progress": progress,
                               "message": message, "reason": reason})
                self._latest = None
        return events

    def _add(self, kind: str, **data: Any) -> None:
        self.seq += 1
        self._buffer().append({"job": self.job_id, "seq": self.seq, "kind": kind, **data})
        if self._changed is not None:   # wake current watchers; later ones wait afresh
            self._changed.set()
            self._changed = None

    def status(self, job: Job) -> None:
        if self._events is None:       # nobody has watched, nothing reported: keep the latest
            self.seq += 1
            self._latest = (self.seq, job.status, job.progress, job.message, job.reason)
        else:
            self._add("status", status=job.status.value, progress=job.progress,
                      message=job.message, reason=job.reason)
        if job.status in FINISHED:
            self.closed = True

    def progress(self, job: Job) -> None:
        self._add("progress", progress=job.progress, message=job.message)

    def log(self, line: str) -> None:
        self._add("log", line=line[:4096])

    def after(self, seq: int) -> list[dict[str, Any]]:
        return [event for event in self._buffer() if event["seq"] > seq]

    async def follow(self, after: int, *, idle: float) -> AsyncIterator[dict[str, Any]]:
        """Yield events after ``after`` until the job finishes; wait ``idle`` s at most each."""
        while True:
            if self._changed is None:
                self._changed = asyncio.Event()
            changed = self._changed
            for event in self.after(after):
                after = event["seq"]
                yield event
            if self.closed:
                return
            async with asyncio.timeout(idle):
                await changed.wait()


def summary(job: Job, seq: int) -> dict[str, Any]:
    """The event a late watcher gets when the job's own events are gone."""
    return {"job": job.id, "seq": seq, "kind": "status", "status": job.status.value,
            "progress": job.progress, "message": job.message, "reason": job.reason,
            "final": job.status is not Status.ACCEPTED and job.status is not Status.RUNNING}
