"""The simple model the state machine checks the real pnsd and pnsweb against.

Owns what the test believes: which PTS are deployed (mode, version, every version they have
had), every job a client was told about (its owner, PTS, input, the versions it may have run
on, the final states it may end in), and which jobs were deleted. It does no I/O: the machine
(tests/integration/test_model.py) updates it after each acknowledged step and asks it what a
reply must look like.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.integration.model_pts import predicted

STATES = frozenset({"accepted", "running", "successful", "failed", "dismissed"})
FINAL = frozenset({"successful", "failed", "dismissed"})
USERS = ("alice", "bob", "carol")   # alice is an administrator, bob and carol are not
ADMINS = frozenset({"alice"})


@dataclass
class PtsModel:
    name: str
    mode: str
    version: int


@dataclass
class JobModel:
    id: str
    owner: str
    pts: str
    mode: str
    data: Any
    size: int                       # the blob a process-mode run writes (0: none)
    versions: set[int]              # the versions it may have run on
    sync: bool = False              # a synchronous run's record (Link rel=monitor)
    finals: set[str] = field(default_factory=lambda: {"successful"})
    failure_reasons: set[str] = field(default_factory=set)   # why it may fail, if it may
    final: str | None = None        # the final state once seen; it never changes afterwards
    verified: bool = False          # its result was read and matched
    deleted: bool = False
    deleted_while_unfinished: bool = False

    def expected_results(self) -> list[Any]:
        return [predicted(self.mode, v, self.data, self.size) for v in sorted(self.versions)]

    def may_fail(self, reason: str) -> None:
        """An event (worker kill, daemon kill, undeploy) may end this job as failed."""
        if self.final is None:
            self.finals.add("failed")
            self.failure_reasons.add(reason)


@dataclass
class Model:
    pts: dict[str, PtsModel] = field(default_factory=dict)
    jobs: dict[str, JobModel] = field(default_factory=dict)
    next_version: dict[str, int] = field(default_factory=dict)
    worker_kills: int = 0
    daemon_kills: int = 0

    def new_version(self, name: str) -> int:
        """Versions of a name never repeat, also across undeploy and deploy."""
        version = self.next_version.get(name, 0) + 1
        self.next_version[name] = version
        return version

    def unfinished(self, pts: str | None = None) -> list[JobModel]:
        return [job for job in self.jobs.values()
                if job.final is None and not job.deleted and (pts is None or job.pts == pts)]

    def swapped(self, name: str, version: int) -> None:
        """``name`` now serves ``version``: its unfinished jobs may run on it (if not yet
        admitted) or be cancelled after the drain timeout."""
        self.pts[name].version = version
        for job in self.unfinished(name):
            job.versions.add(version)
            job.may_fail("cancelled")

    def undeployed(self, name: str) -> None:
        del self.pts[name]
        for job in self.unfinished(name):
            job.may_fail("cancelled")
            job.finals.add("dismissed")

    def live(self) -> list[JobModel]:
        return [job for job in self.jobs.values() if not job.deleted]

    def deleted(self) -> list[JobModel]:
        return [job for job in self.jobs.values() if job.deleted]
