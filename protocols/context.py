"""What a PTS callable is and sees: loading ``module:function``, and its ``ctx``.

The in-process host and the worker runtime both load PTS entries with :func:`load_entry` and
hand a PTS a :class:`RunContext`, so PTS code runs unchanged in either mode. Python 3.6
compatible (the stdio worker runtime runs on 3.6); imports nothing of ours.
"""

import importlib
import inspect
import math
import sys
import threading
from typing import Any, Callable, Optional

MAX_PATHS_SHOWN = 12      # sys.path entries a missing module's error lists
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
        """Report how far the run is (0-100, clamped). A percent that is not a finite number
        is ignored, with a line in the run's log: a progress report never fails a run."""
        if self._on_progress is None:
            return
        if isinstance(percent, float) and not math.isfinite(percent):
            self.log("progress ignored: %r is not a finite number" % percent)
            return
        self._on_progress(max(0, min(100, int(percent))), str(message))

    def log(self, line: str) -> None:
        if self._on_log is not None:
            self._on_log(str(line))


class EntryError(Exception):
    """A ``module:function`` cannot be loaded."""


def load_entry(entry: str) -> Callable[..., Any]:
    """Import ``module:function``; raise EntryError saying why it cannot be had."""
    module_name, _, attr = entry.partition(":")
    if not module_name or not attr:
        raise EntryError("%r is not of the form module:function" % entry)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        where = ""
        if exc.name is not None and module_name.startswith(exc.name):
            # the module itself (not one it imports) is missing: say where it was looked for
            where = " (looked in %s)" % ", ".join(p or "." for p in sys.path[:MAX_PATHS_SHOWN])
        raise EntryError("cannot import %r: %s%s" % (module_name, exc, where)) from exc
    except Exception as exc:  # any import-time failure of user code means a bad entry
        raise EntryError("cannot import %r: %s: %s"
                         % (module_name, type(exc).__name__, exc)) from exc
    func = getattr(module, attr, None)
    if not callable(func):
        raise EntryError("%r is not a callable" % entry)
    return func  # type: ignore[no-any-return]


def accepts_ctx(func: Callable[..., Any]) -> bool:
    """True when ``func`` takes a ``ctx`` keyword (by name or through ``**kwargs``)."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return False
    return "ctx" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
