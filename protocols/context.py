"""What a PTS callable sees as ``ctx``: progress, log lines and cancellation.

The in-process host and the worker runtime both hand a PTS an object of this shape, so PTS code
runs unchanged in either mode. Python 3.8 compatible; imports nothing of ours.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

ProgressSink = Callable[[int, str], None]
LogSink = Callable[[str], None]


class RunContext:
    """Passed as ``ctx=`` to a PTS callable that accepts it.

    ``progress`` and ``log`` are safe to call from any thread; ``cancelled`` turns true when the
    caller or a timeout asks the run to stop, and a PTS that checks it should return soon.
    """

    def __init__(
        self,
        job_id: str = "",
        on_progress: Optional[ProgressSink] = None,
        on_log: Optional[LogSink] = None,
    ) -> None:
        self.job_id = job_id
        self._on_progress = on_progress
        self._on_log = on_log
        self._cancelled = False
        # Made only when a PTS waits on it: most runs never do, and an Event is not free.
        self._event: Optional[threading.Event] = None

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True          # first the flag, then wake a waiter if there is one
        event = self._event
        if event is not None:
            event.set()

    def wait_cancelled(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early (and returning True) on cancel."""
        if self._event is None:
            self._event = threading.Event()
        if self._cancelled:             # a cancel that came before the event existed
            return True
        return self._event.wait(timeout)

    def progress(self, percent: int, message: str = "") -> None:
        if self._on_progress is not None:
            self._on_progress(max(0, min(100, int(percent))), str(message))

    def log(self, line: str) -> None:
        if self._on_log is not None:
            self._on_log(str(line))
