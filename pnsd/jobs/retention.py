"""The size bound of the job store (``retention_bytes``), held at write time.

Owns counting what the store holds and deciding when a write must be followed by a trim, and
to what size. It must not touch the database or files: :class:`pnsd.jobs.store.JobStore` queues the
trims and :mod:`pnsd.jobs.trimming` removes the files.
"""

from __future__ import annotations


class SizeBound:
    """What the store holds (inputs plus results), and when a write must be followed by a trim.

    A trim goes down to LOW_WATER of the bound, so trims (each a scan of the table) come once
    per tenth of the bound written, not once per job. ``stored`` may overestimate (deletes
    are not counted): that only brings the next trim sooner, and a trim says the true total.
    """

    LOW_WATER = 0.9

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.stored = 0
        self.grown = 0              # bytes ever counted: what came after a trim was queued
        self.trim_above = limit

    def grow(self, size: int) -> int | None:
        """Count ``size``; the target of the trim that must follow now, or None."""
        self.stored += size
        self.grown += size
        if self.limit is None or self.trim_above is None or self.stored <= self.trim_above:
            return None
        target = int(self.limit * self.LOW_WATER)
        self.stored = target        # what the queued trim leaves, unless unfinished jobs hold more
        return target

    def trimmed(self, left: int, target: int, grown: int) -> None:
        """A trim queued when ``grown`` bytes had been counted left ``left`` bytes."""
        assert self.limit is not None
        self.stored = left + (self.grown - grown)
        # unfinished jobs alone over the target: trim again only after another tenth
        self.trim_above = self.limit if left <= target else left + self.limit // 10

    def failed(self) -> None:
        self.stored = self.limit + 1 if self.limit is not None else self.stored
