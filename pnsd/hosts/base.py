"""The contract every hosting mode (inproc, worker, process) fulfils.

A host runs one generation of one PTS. Queueing, concurrency limits and job records live above
it (in the registry); a host is only asked to run when it has a free slot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pnsd.spec import PtsSpec
from protocols.context import RunContext

HOOKS = ("init", "config", "clean")


@dataclass
class HostState:
    """What status and readiness report about a host."""

    state: str = "starting"          # starting | ready | degraded | unavailable | stopped
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, **self.details}


class Host(Protocol):
    spec: PtsSpec
    # True when the host keeps its own line of runs waiting for a worker (handing each the
    # worker freed by the one before, at once): the registry then lets every admitted run
    # through to it instead of holding the runs beyond ``spec.slots`` itself.
    queues_runs: bool

    async def start(self) -> None:
        """Load or spawn what the PTS needs; raise a DaemonError if it cannot serve."""

    async def run(self, data: Any, *, timeout: float, ctx: RunContext) -> Any:
        """Run once and return the result; raise RunTimeout, Cancelled, PtsFailed, WorkerDied."""

    async def hook(self, name: str, *, timeout: float) -> Any:
        """Run the init, config or clean hook; a PTS without that hook returns None."""

    async def stop(self, *, grace: float) -> None:
        """Release everything; no child process may outlive this call."""

    def state(self) -> HostState:
        """Current health, cheap to call."""
