"""A rolling window of finished runs per PTS: counts by outcome and latency percentiles.

Owns the figures the ``stats`` operation answers (the console's plots): for the last
:data:`SPAN` seconds, in buckets of :data:`STEP` seconds, how many runs of each PTS succeeded,
failed and were dismissed, and the 50th, 90th and 99th percentile of their latency (creation to
finish, the wait in line included). Latencies are counted in a logarithmic histogram per
bucket (bins :data:`RATIO` apart), so memory is bounded by PTS x buckets x bins whatever the
load, and a percentile is exact to within one bin (a quarter). It is fed one call per finished
run, on the daemon's event loop; no I/O, no locks.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pnsd.jobs.model import Job, Status

__all__ = ["PERCENTILES", "SPAN", "STEP", "Rolling"]

STEP = 5          # seconds a bucket spans
SPAN = 600        # seconds the window keeps (ten minutes)
RATIO = 1.25      # one latency bin's upper bound over the one before
FLOOR = 1e-4      # seconds: the first bin holds every latency up to this
BINS = 128        # the last bin holds everything above FLOOR * RATIO ** (BINS - 1) (~26 h)
PERCENTILES = (50, 90, 99)
_BOUNDS = [FLOOR * RATIO ** slot for slot in range(BINS)]   # each bin's upper bound
OUTCOMES = {Status.SUCCESSFUL: "ok", Status.FAILED: "failed", Status.DISMISSED: "dismissed"}
_OUTCOME_INDEX = {status: n for n, status in enumerate(OUTCOMES)}


@dataclass
class Bucket:
    """The runs of one PTS that finished within one step."""

    index: int                         # start time // STEP
    counts: list[int] = field(default_factory=lambda: [0, 0, 0])   # by OUTCOMES' order
    bins: dict[int, int] = field(default_factory=dict)   # latency bin -> runs

    def add(self, outcome: int, latency: float) -> None:
        self.counts[outcome] += 1
        slot = bin_of(latency)
        self.bins[slot] = self.bins.get(slot, 0) + 1


def bin_of(latency: float) -> int:
    """The histogram bin of a latency in seconds: the first whose upper bound holds it (a
    search of the bounds: a logarithm for every run costs several times as much)."""
    return min(BINS - 1, bisect.bisect_left(_BOUNDS, latency))


def bound_of(slot: int) -> float:
    """The upper bound, in seconds, of bin ``slot``."""
    return FLOOR * RATIO ** slot


def percentile(bins: dict[int, int], share: float) -> float | None:
    """The latency (a bin's upper bound) under which ``share`` of the runs in ``bins`` fall."""
    return percentiles(bins, (share,))[0]


def percentiles(bins: dict[int, int], shares: tuple[float, ...]) -> list[float | None]:
    """:func:`percentile` for each of ``shares`` (ascending), in one pass over the bins."""
    total = sum(bins.values())
    if total == 0:
        return [None] * len(shares)
    found: list[float | None] = []
    seen = 0
    slots = iter(sorted(bins))
    slot = -1
    for share in shares:
        while seen < share * total:
            slot = next(slots)
            seen += bins[slot]
        found.append(round(bound_of(max(slot, 0)), 6))
    return found


class Rolling:
    """Per PTS, the buckets of the last ``span`` seconds."""

    def __init__(self, *, step: int = STEP, span: int = SPAN) -> None:
        self.step = step
        self.count = span // step
        self._series: dict[str, deque[Bucket]] = {}

    def add(self, job: Job) -> None:
        """Count a finished run (a job that is not finished is ignored)."""
        outcome = _OUTCOME_INDEX.get(job.status)
        if outcome is None:
            return
        finished = job.finished if job.finished is not None else job.updated
        index = int(finished // self.step)
        series = self._series.get(job.pts)
        if series is None:      # (not setdefault: that would make a deque for every run)
            series = self._series[job.pts] = deque(maxlen=self.count)
        if not series or series[-1].index < index:
            series.append(Bucket(index))
        # A finish stamped before the newest bucket (runs end out of order within a step, or
        # the clock stepped back) counts in the newest one: buckets stay in order.
        series[-1].add(outcome, max(0.0, finished - job.created))

    def figures(self, now: float, *, span: int | None = None) -> dict[str, Any]:
        """The window ending at ``now`` as aligned series: ``times`` (bucket starts) and, per
        PTS, ``ok``, ``failed``, ``dismissed`` (runs per bucket) and ``p50``/``p90``/``p99``
        (seconds, null where a bucket has no run), plus ``total`` over the whole window."""
        count = self.count if span is None else max(1, min(self.count, span // self.step))
        last = int(now // self.step)
        first = last - count + 1
        self._forget(last - self.count + 1)
        pts = {name: self._one(series, first, count)
               for name, series in sorted(self._series.items())}
        return {"step": self.step, "span": count * self.step, "now": now,
                "times": [(first + i) * self.step for i in range(count)], "pts": pts}

    def _one(self, series: deque[Bucket], first: int, count: int) -> dict[str, Any]:
        shown: list[Bucket | None] = [None] * count
        whole: dict[int, int] = {}
        for bucket in series:
            if first <= bucket.index < first + count:
                shown[bucket.index - first] = bucket
                for slot, runs in bucket.bins.items():
                    whole[slot] = whole.get(slot, 0) + runs
        figures: dict[str, Any] = {
            name: [b.counts[n] if b else 0 for b in shown]
            for n, name in enumerate(OUTCOMES.values())}
        shares = tuple(p / 100 for p in PERCENTILES)
        each = [percentiles(b.bins, shares) if b else [None] * len(shares) for b in shown]
        for n, p in enumerate(PERCENTILES):
            figures[f"p{p}"] = [values[n] for values in each]
        total = {name: sum(figures[name]) for name in OUTCOMES.values()}
        figures["total"] = total | {f"p{p}": value for p, value in
                                    zip(PERCENTILES, percentiles(whole, shares), strict=True)}
        return figures

    def _forget(self, oldest: int) -> None:
        """Drop buckets older than the window, and PTS with none left (undeployed ones)."""
        for name in list(self._series):
            series = self._series[name]
            while series and series[0].index < oldest:
                series.popleft()
            if not series:
                del self._series[name]
