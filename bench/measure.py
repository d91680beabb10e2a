"""Running trials: the size of a run (:class:`Plan`), interleaving, and medians.

A figure is measured as interleaved trials — baseline, PNS, baseline, PNS, … — each a bounded
load run by the agent, so that the noise of a shared 2-core machine falls on both sides alike;
the figure is the median over trials (:class:`Agg`). A trial that fails or overruns counts as
a failed trial, never as a number.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from bench.stack import Stack


@dataclass(frozen=True)
class Plan:
    quick: bool
    trials: int
    seconds: float          # one ZeroMQ trial
    http_seconds: float
    max_count: int          # every trial is bounded by this count too
    jobs: int               # async submissions per trial
    payload_seconds: float
    budget: float           # seconds for the whole run; areas beyond it are skipped

    @classmethod
    def of(cls, *, quick: bool, trials: int | None) -> Plan:
        if quick:
            return cls(quick=True, trials=trials or 3, seconds=0.3, http_seconds=0.4,
                       max_count=50_000, jobs=1_000, payload_seconds=0.4, budget=80)
        return cls(quick=False, trials=trials or 3, seconds=1.5, http_seconds=2.0,
                   max_count=400_000, jobs=10_000, payload_seconds=1.5, budget=540)


@dataclass
class Agg:
    """One side of a figure over its trials."""

    results: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    peak_rss: dict[str, float] = field(default_factory=dict)

    def median(self, key: str) -> float | None:
        values = [r[key] for r in self.results if r.get(key) is not None]
        return statistics.median(values) if values else None

    def total(self, key: str) -> int:
        return int(sum(r.get(key) or 0 for r in self.results))

    @property
    def rate(self) -> float | None:
        return self.median("rate")

    @property
    def lat(self) -> tuple[float | None, float | None]:
        return self.median("p50"), self.median("p99")

    @property
    def errors(self) -> int:
        return self.total("errors") + len(self.failures)

    def problems(self) -> str:
        texts = [r["error"] for r in self.results if r.get("error")] + self.failures
        return texts[0] if texts else ""


class Bench:
    """The stack, the plan and the agent, with the interleaving of trials."""

    def __init__(self, stack: Stack, plan: Plan) -> None:
        self.stack = stack
        self.plan = plan
        self.started = time.monotonic()

    def over_budget(self) -> bool:
        return time.monotonic() - self.started > self.plan.budget

    def zmq(self, name: str, **fields: Any) -> dict[str, Any]:
        """A ZeroMQ command against service ``name`` (a pnsd or a bare server)."""
        service = self.stack[name]
        target = "pns" if name.startswith("pnsd") else "bare"
        cmd = {"target": target, "endpoint": service.endpoint, "key": service.key,
               "seconds": self.plan.seconds, "count": self.plan.max_count}
        cmd.update(fields)
        return cmd

    def http(self, name: str, method: str, path: str, **fields: Any) -> dict[str, Any]:
        cmd = {"kind": "http", "port": self.stack[name].port, "method": method, "path": path,
               "conns": 32, "seconds": self.plan.http_seconds, "count": self.plan.max_count}
        cmd.update(fields)
        return cmd

    def trial(self, cmd: dict[str, Any], agg: Agg, sample: tuple[str, ...] = ()) -> None:
        limit = float(cmd.get("seconds", 10)) * 3 + 60
        try:
            with self.stack.sampling(*sample) as sampler:
                agg.results.append(self.stack.agent.call(cmd, timeout=limit))
            for name, peak in sampler.peak.items():
                agg.peak_rss[name] = max(agg.peak_rss.get(name, 0.0), peak)
        except (RuntimeError, TimeoutError) as exc:
            agg.failures.append(str(exc))

    def interleave(self, cmds: dict[str, dict[str, Any]], *, trials: int | None = None,
                   sample: dict[str, tuple[str, ...]] | None = None) -> dict[str, Agg]:
        """Run each command once per round, in the given order, for ``trials`` rounds."""
        aggs = {name: Agg() for name in cmds}
        for _ in range(trials or self.plan.trials):
            for name, cmd in cmds.items():
                self.trial(cmd, aggs[name], (sample or {}).get(name, ()))
        return aggs
