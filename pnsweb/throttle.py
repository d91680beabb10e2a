"""Back-off for failed logins, per client and user name.

Owns :class:`LoginThrottle`: it counts the failed password checks of each (client address, user
name). The first :data:`FREE_FAILURES` cost nothing; each further one makes that client wait
before its next attempt at that name, doubling from 1 s up to :data:`MAX_WAIT`. While it waits,
its attempts are answered 429 with ``Retry-After`` at once, with no password check (so no
scrypt work), right or wrong, cached or not (else a cached right password would answer 200
where wrong ones get 429, and the wait would not slow the guessing). A success, or
:data:`FORGET_AFTER` seconds without a failure, clears the record. Other clients, and other
names from the same client, are not slowed. Keyed by name as well as address, so that callers
behind one proxy do not lock each other out. The records can be exported and loaded, so that
the processes of one port (:mod:`pnsweb.sharing`) start from the same ones. Must not call the
daemon.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pnsweb.errors import ApiError

FREE_FAILURES = 5
MAX_WAIT = 60.0            # seconds
FORGET_AFTER = 900.0       # seconds after the last failure
MAX_RECORDS = 10_000       # clients remembered; the least recent is forgotten first


@dataclass
class _Record:
    failures: int
    last: float            # when the last failure happened
    until: float           # no attempt before this


class LoginThrottle:
    """Failed logins by (client, user name), and the waits they earn."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()
        self._waiting: dict[str, float] = {}     # client -> the end of its latest wait

    def waiting(self, client: str) -> bool:
        """Whether ``client`` may have to wait for some name (cheap: asked on every request)."""
        until = self._waiting.get(client)
        if until is None:
            return False
        if until > self._clock():
            return True
        del self._waiting[client]
        return False

    def check(self, client: str, name: str) -> None:
        """Raise 429 (with Retry-After) while ``client`` must wait before trying ``name``."""
        record = self._records.get((client, name))
        if record is None:
            return
        now = self._clock()
        if now - record.last > FORGET_AFTER:
            del self._records[(client, name)]
        elif now < record.until:
            wait = math.ceil(record.until - now)
            raise ApiError(429, f"too many failed logins: try again in {wait} s",
                           headers={"Retry-After": str(wait)})

    def failed(self, client: str, name: str) -> None:
        now = self._clock()
        record = self._records.pop((client, name), None)
        failures = record.failures + 1 if record and now - record.last <= FORGET_AFTER else 1
        wait = 0.0 if failures <= FREE_FAILURES else \
            min(MAX_WAIT, 2.0 ** (failures - FREE_FAILURES - 1))
        self._records[(client, name)] = _Record(failures, now, now + wait)
        while len(self._records) > MAX_RECORDS:
            self._records.popitem(last=False)
        if wait:
            self._waiting[client] = max(self._waiting.get(client, 0.0), now + wait)
            while len(self._waiting) > MAX_RECORDS:
                del self._waiting[next(iter(self._waiting))]

    def succeeded(self, client: str, name: str) -> None:
        self._records.pop((client, name), None)

    def export(self) -> list[list[Any]]:
        """The records as plain data: ``[client, name, failures, last, until]`` each (the
        times are this host's monotonic clock, the same in every process)."""
        return [[client, name, r.failures, r.last, r.until]
                for (client, name), r in self._records.items()]

    def load(self, rows: list[list[Any]]) -> None:
        """Take the records of :meth:`export` (another process's) in place of these."""
        self._records.clear()
        self._waiting.clear()
        for client, name, failures, last, until in rows:
            self._records[(str(client), str(name))] = _Record(int(failures), last, until)
            if until > last:
                self._waiting[client] = max(self._waiting.get(client, 0.0), float(until))

    def __len__(self) -> int:
        return len(self._records)

