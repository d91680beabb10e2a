"""Messages refused at the front door: counted always, logged and answered at a bounded rate.

Owns the refusal counters by reason (the error code; the ``status`` reply carries them, pnsweb
renders them as ``pns_protocol_refused_total``), the log budget (one ``message_refused`` line
per reason per interval, saying how many were left unlogged since the last one) and the answer
budget (a token bucket shared by every peer: a flood of forged messages cannot make the daemon
send a reply for each). Must not touch sockets or decode messages: :mod:`pnsd.server` does.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger(__name__)

LOG_EVERY = 1.0        # seconds between two log lines of one reason
ANSWER_RATE = 100.0    # refusals answered per second, in all (SPEC.md, "Refusals")
ANSWER_BURST = 100.0   # answers that may go out at once after a quiet while
ANSWER_TEXT = 80       # characters of an answer's message: an answer stays under 300 bytes


class Refusals:
    """The counters and the two budgets of one server."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 rate: float = ANSWER_RATE, burst: float = ANSWER_BURST,
                 log_every: float = LOG_EVERY) -> None:
        self.counts: Counter[str] = Counter()
        self.unanswered = 0        # refusals that could have been answered but for the budget
        self._clock = clock
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._filled = clock()
        self._log_every = log_every
        self._logged: dict[str, float] = {}          # reason -> when its last line was written
        self._unlogged: Counter[str] = Counter()     # reason -> refusals since that line

    def count(self, reason: str, error: str, **data: Any) -> None:
        """One refused message: counted, and logged unless its reason was logged just now."""
        self.counts[reason] += 1
        now = self._clock()
        last = self._logged.get(reason)
        if last is not None and now - last < self._log_every:
            self._unlogged[reason] += 1
            return
        self._logged[reason] = now
        log.warning("message_refused", code=reason, error=error, **data,
                    unlogged=self._unlogged.pop(reason, 0), total=self.counts[reason])

    def may_answer(self) -> bool:
        """True if the answer budget has room for one more answer (it is not spent yet)."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._filled) * self._rate)
        self._filled = now
        if self._tokens >= 1:
            return True
        self.unanswered += 1
        return False

    def answered(self) -> None:
        """Spend one answer of the budget."""
        self._tokens -= 1

    def figures(self) -> dict[str, Any]:
        """For the ``status`` reply."""
        return {"refused": dict(self.counts), "unanswered": self.unanswered}
