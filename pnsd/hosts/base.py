"""The contract every hosting mode (inproc, worker, process) fulfils: :class:`Host`.

A host runs one generation of one PTS. Queueing, concurrency limits and job records live above
it (in the registry); a host is only asked to run when it has a free slot. Every call the
daemon makes on a host is in :class:`Host`: callers never ask which mode a host is. What only
some modes have (the reference's mailbox dirs and scripts: process mode) is part of it too, and
the modes without it refuse with :func:`no_mailbox`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pnsd.errors import BadRequest
from pnsd.spec import PtsSpec
from protocols.context import RunContext


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

    def exchange_dir(self) -> Path:
        """Where the reference API's ``input/`` and ``output/`` dirs are; BadRequest
        (:func:`no_mailbox`) for a mode without them."""

    def script(self, name: str) -> tuple[str, ...]:
        """The argv of ``run`` or a hook (empty when the spec has none); BadRequest
        (:func:`no_mailbox`) for a mode without scripts."""


def no_mailbox(spec: PtsSpec) -> BadRequest:
    """The refusal of a mailbox or script call by a mode that has no scripts (not process)."""
    return BadRequest(f"PTS {spec.name} is not a process-mode PTS (no mailbox)")
