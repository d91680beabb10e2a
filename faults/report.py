"""What a fault reports, and the table the suite prints.

Owns :class:`Row` (one fault's tries, requests sent, requests that failed although they should
not have, acknowledged data lost, the failures that were expected, notes) and rendering rows
as a fixed-width table. A row passes when nothing that should have worked failed, nothing
acknowledged was lost and the fault itself ran to the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    fault: str
    tries: int = 0
    sent: int = 0
    failed: int = 0          # requests that failed although they should not have
    lost: int = 0            # acknowledged jobs missing, or results that differ
    expected: int = 0        # failures the fault is meant to cause (worker_died, 503...)
    skipped: str = ""        # why the fault could not run here (then it neither passes nor fails)
    broken: str = ""         # a harness error or a leftover process: the row fails
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.skipped and not self.broken and self.failed == 0 and self.lost == 0

    @property
    def verdict(self) -> str:
        if self.skipped:
            return "SKIPPED"
        return "passed" if self.passed else "FAILED"

    def note(self, text: str) -> None:
        self.notes.append(text)

    def fail(self, text: str, *, count: int = 1) -> None:
        """A request that should have worked did not; say why (first few only)."""
        self.failed += count
        if sum(n.startswith("should-not-fail") for n in self.notes) < 5:
            self.notes.append(f"should-not-fail: {text}")

    def lose(self, text: str, *, count: int = 1) -> None:
        self.lost += count
        if sum(n.startswith("lost") for n in self.notes) < 5:
            self.notes.append(f"lost: {text}")


HEADER = ("fault", "tries", "sent", "failed*", "lost", "expected", "result", "s")


def table(rows: list[Row]) -> str:
    """The rows as a fixed-width table; notes follow, one per line, under their fault."""
    cells = [HEADER] + [
        (r.fault, str(r.tries), str(r.sent), str(r.failed), str(r.lost), str(r.expected),
         r.verdict, f"{r.seconds:.1f}") for r in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]

    def fmt(line: tuple[str, ...]) -> str:
        first = line[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest])

    out = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    out += [fmt(line) for line in cells[1:]]
    out.append("failed* = requests that failed although they should not have; "
               "lost = acknowledged jobs or results lost; expected = failures the fault causes")
    for row in rows:
        extra = ([f"skipped: {row.skipped}"] if row.skipped else []) + (
            [f"broken: {row.broken}"] if row.broken else []) + row.notes
        for text in extra:
            out.append(f"  [{row.fault}] {text}")
    return "\n".join(out)
