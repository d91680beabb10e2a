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
    warmup: float           # longest warm-up before a trial's timed phase
    budget: float           # seconds for the whole run; areas beyond it are skipped

    @classmethod
    def of(cls, *, quick: bool, trials: int | None, budget: float | None = None) -> Plan:
        if quick:
            return cls(quick=True, trials=trials or 3, seconds=0.25, http_seconds=0.3,
                       max_count=50_000, jobs=500, payload_seconds=0.3, warmup=0.1,
                       budget=budget or 70)
        return cls(quick=False, trials=trials or 3, seconds=1.5, http_seconds=2.0,
                   max_count=400_000, jobs=10_000, payload_seconds=1.5, warmup=0.5,
                   budget=budget or 480)


@dataclass
class Agg:
    """One side of a figure over its trials."""

    results: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    peak_rss: dict[str, float] = field(default_factory=dict)
    # the most VmRSS rose within one trial above where it was when the trial began (MB)
    rss_rise: dict[str, float] = field(default_factory=dict)
    cpu: float = 0.0      # CPU seconds of the server side's process trees in timed phases
    cpu_ok: int = 0       # requests those phases completed

    def cpu_per_ok(self) -> float | None:
        """Server CPU seconds per successful request (robust to a noisy machine)."""
        return self.cpu / self.cpu_ok if self.cpu_ok and self.cpu else None

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
        self.area = ""      # the area being measured, set by the runner
        self.peaks: dict[str, dict[str, float]] = {}   # area -> service -> peak RSS (MB)

    def peak(self, service: str, areas: tuple[str, ...]) -> float | None:
        """Peak RSS of ``service`` seen during the trials of ``areas`` (None: not loaded)."""
        values = [self.peaks.get(a, {}).get(service) for a in areas]
        found = [v for v in values if v]
        return max(found) if found else None

    def over_budget(self) -> bool:
        return time.monotonic() - self.started > self.plan.budget

    def zmq(self, name: str, **fields: Any) -> dict[str, Any]:
        """A ZeroMQ command against service ``name`` (a pnsd or a bare server)."""
        service = self.stack[name]
        target = "pns" if name.startswith("pnsd") else "bare"
        cmd = {"target": target, "endpoint": service.endpoint, "key": service.key,
               "seconds": self.plan.seconds, "count": self.plan.max_count,
               "warmup_seconds": self.plan.warmup, "_sample": [name]}
        cmd.update(fields)
        return cmd

    def http(self, name: str, method: str, path: str, **fields: Any) -> dict[str, Any]:
        backend = {"pnsweb": ["pnsd_on"], "pnsweb_pg": ["pnsd_pg_on"],
                   "base_web": ["base_echo"], "base_web_uv": ["base_echo"],
                   "base_web_stream": ["base_echo_stream"]}.get(name, [])
        # wrk times the phase when it is installed (bench.wrk), as users measure; the Python
        # client warms up, checks a reply's body, and stands in when wrk is missing
        cmd = {"kind": "http", "port": self.stack[name].port, "method": method, "path": path,
               "conns": 32, "seconds": self.plan.http_seconds, "count": self.plan.max_count,
               "warmup_seconds": self.plan.warmup, "_sample": [name, *backend], "wrk": True}
        cmd.update(fields)
        return cmd

    def trial(self, cmd: dict[str, Any], agg: Agg, sample: tuple[str, ...] = ()) -> None:
        """One load; the services it loads (``_sample``) are watched for RSS and CPU."""
        limit = float(cmd.get("seconds", 10)) * 3 + 60
        try:
            with self.stack.sampling(*cmd.get("_sample", ()), *sample) as sampler:
                agg.results.append(self.stack.agent.call(cmd, timeout=limit))
            area = self.peaks.setdefault(self.area, {})
            for name, peak in sampler.peak.items():
                agg.peak_rss[name] = max(agg.peak_rss.get(name, 0.0), peak)
                rise = peak - sampler.first.get(name, peak)
                agg.rss_rise[name] = max(agg.rss_rise.get(name, 0.0), rise)
                area[name] = max(area.get(name, 0.0), peak)
            result = agg.results[-1]
            window = result.get("window")
            cpu = sampler.cpu_between(*window) if window else None
            if cpu is not None:   # the timed phase only, without warm-up and set-up
                agg.cpu += cpu
                agg.cpu_ok += result.get("ok") or result.get("submitted") or 0
        except (RuntimeError, TimeoutError) as exc:
            agg.failures.append(str(exc))

    def interleave(self, cmds: dict[str, dict[str, Any]], *,
                   trials: int | None = None) -> dict[str, Agg]:
        """Run each command once per round, in the given order, for ``trials`` rounds."""
        aggs = {name: Agg() for name in cmds}
        for _ in range(trials or self.plan.trials):
            for name, cmd in cmds.items():
                self.trial(cmd, aggs[name])
        return aggs


def cpu_note(pns: Agg, base: Agg, *, base_name: str = "baseline", pns_name: str = "PNS") -> str:
    """Server-side CPU per request of both sides, a robust figure on a busy machine."""
    a, b = pns.cpu_per_ok(), base.cpu_per_ok()
    if a is None or b is None:
        return ""
    return (f" Server CPU per request (process trees, all trials): {pns_name} {_us(a)}, "
            f"{base_name} {_us(b)} ({a / b:.1f}x).")


def loader_note(*aggs: Agg) -> str:
    """Which HTTP load client timed these trials (wrk, or the Python client without it)."""
    loaders = sorted({r.get("loader", "python") for agg in aggs for r in agg.results})
    if not loaders:
        return ""
    names = {"wrk": "wrk (1 thread)", "python": "the Python client (bench.httpload)"}
    return " Load: " + " and ".join(names.get(name, name) for name in loaders) + "."


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs" if seconds < 0.01 else f"{seconds * 1e3:,.1f} ms"
