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
        self._cancel = threading.Event()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def wait_cancelled(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, waking early (and returning True) on cancel."""
        return self._cancel.wait(timeout)

    def progress(self, percent: int, message: str = "") -> None:
        if self._on_progress is not None:
            self._on_progress(max(0, min(100, int(percent))), str(message))

    def log(self, line: str) -> None:
        if self._on_log is not None:
            self._on_log(str(line))
