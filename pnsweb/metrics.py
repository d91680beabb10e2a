"""Request metrics and the Prometheus text exposition (format 0.0.4), written by hand.

Owns :class:`Metrics` (requests by method, route and status; a latency histogram per method
and route; :func:`pnsweb.app.request_middleware` records every request in it) and the
rendering of daemon figures (per-PTS state, running, queue depth, worker restarts; store
counters; jobs by status; protocol messages refused by reason). Prometheus naming holds: a
figure that only grows is a ``counter`` named ``..._total``, one that goes up and down a ``gauge``.
Routes are labelled with the aiohttp resource's canonical path (``/v1/jobs/{jobId}``), never
the raw path, so label cardinality stays bounded; requests that matched no route are
``unmatched``. Why not ``prometheus_client``: a few counters and one histogram are ~100 lines
here, and the library would add a dependency and a process-global registry (two apps in one
process, as in the tests, would share counts).
When pnsweb serves from several processes, the /metrics view renders the sum of every
process's counters (:meth:`Metrics.snapshot` and :meth:`Metrics.merge`, gathered through
:mod:`pnsweb.sharing`) and how many processes answered (``pnsweb_processes``).
Must not call the daemon: the /metrics view fetches and passes the replies in.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
           30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"
CLIENT_GONE = 499    # the client closed the connection before the reply (nginx's convention)


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(BUCKETS, seconds)
        if index < len(BUCKETS):
            self.counts[index] += 1
        self.total += seconds
        self.count += 1


@dataclass
class RouteStats:
    """One method and route's requests: how many ended in each status, and their latency."""

    statuses: Counter[int] = field(default_factory=Counter)
    latency: Histogram = field(default_factory=Histogram)


@dataclass
class Metrics:
    """The web process's own request metrics (one per app, no global registry)."""

    routes: dict[tuple[str, str], RouteStats] = field(default_factory=dict)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one request (called for every request: keep it cheap)."""
        stats = self.routes.get((method, route))
        if stats is None:
            stats = self.routes[(method, route)] = RouteStats()
        stats.statuses[status] += 1
        stats.latency.observe(seconds)

    def snapshot(self) -> list[list[Any]]:
        """The counters as plain data, for adding up across processes (:meth:`merge`)."""
        return [[method, route, {str(k): v for k, v in stats.statuses.items()},
                 stats.latency.counts, stats.latency.total, stats.latency.count]
                for (method, route), stats in self.routes.items()]

    def merge(self, rows: list[list[Any]]) -> None:
        """Add another process's :meth:`snapshot` to these counters."""
        for method, route, statuses, counts, total, count in rows:
            stats = self.routes.get((method, route))
            if stats is None:
                stats = self.routes[(method, route)] = RouteStats()
            for status, n in statuses.items():
                stats.statuses[int(status)] += int(n)
            hist = stats.latency
            hist.counts = [a + int(b) for a, b in zip(hist.counts, counts, strict=True)]
            hist.total += float(total)
            hist.count += int(count)

    def render(self) -> list[str]:
        lines = _header("pnsweb_requests_total", "counter", "HTTP requests by route and status.")
        counts = sorted((method, route, status, count)
                        for (method, route), stats in self.routes.items()
                        for status, count in stats.statuses.items())
        for method, route, status, count in counts:
            lines.append(_sample("pnsweb_requests_total",
                                 {"method": method, "route": route, "status": str(status)}, count))
        name = "pnsweb_request_duration_seconds"
        lines += _header(name, "histogram", "HTTP request latency by route.")
        for (method, route), stats in sorted(self.routes.items()):
            hist = stats.latency
            labels = {"method": method, "route": route}
            running = 0
            for bound, count in zip(BUCKETS, hist.counts, strict=True):
                running += count
                lines.append(_sample(f"{name}_bucket", {**labels, "le": f"{bound:g}"}, running))
            lines.append(_sample(f"{name}_bucket", {**labels, "le": "+Inf"}, hist.count))
            lines.append(_sample(f"{name}_sum", labels, hist.total))
            lines.append(_sample(f"{name}_count", labels, hist.count))
        return lines


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def render_processes(count: int) -> list[str]:
    lines = _header("pnsweb_processes", "gauge",
                    "pnsweb processes serving this port whose counters are summed here.")
    return [*lines, _sample("pnsweb_processes", {}, count)]


# -- daemon figures ---------------------------------------------------------------------------

def render_daemon(status: Mapping[str, Any] | None, jobs: Mapping[str, int]) -> list[str]:
    """Gauges from the daemon's ``status`` reply (None: unreachable) and job totals."""
    lines = _header("pns_daemon_up", "gauge", "1 when the daemon answered the scrape.")
    lines.append(_sample("pns_daemon_up", {}, 0 if status is None else 1))
    if status is None:
        return lines
    lines += _header("pns_daemon_uptime_seconds", "gauge", "Daemon uptime.")
    lines.append(_sample("pns_daemon_uptime_seconds", {}, float(status.get("uptime") or 0)))
    lines += _pts_lines(status.get("pts") or {})
    lines += _refusal_lines(status.get("refusals") or {})
    lines += _store_lines(status.get("store") or {})
    lines += _header("pns_jobs", "gauge", "Jobs in the store by status.")
    lines += [_sample("pns_jobs", {"status": s}, n) for s, n in sorted(jobs.items())]
    return lines


# The job store's figures that only ever grow (since the daemon started): Prometheus counters,
# named ``..._total``; every other store figure (queued, pending, open) is a gauge.
STORE_COUNTERS = frozenset({"commits", "write_errors", "lost", "ownership_lost", "reconnects",
                            "lease_lost", "lease_failures", "reaped"})


def _store_lines(store: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for key, value in sorted(store.items()):
        if not isinstance(value, bool | int | float):
            continue
        if key in STORE_COUNTERS:
            name = f"pns_store_{key}_total"
            lines += _header(name, "counter", f"Job store: {key} since the daemon started.")
        else:
            name = f"pns_store_{key}"
            lines += _header(name, "gauge", f"Job store: {key}.")
        lines.append(_sample(name, {}, float(value)))
    return lines


def _pts_lines(pts: Mapping[str, Mapping[str, Any]]) -> list[str]:
    figures = (
        ("pns_pts_ready", "gauge", "1 when the PTS is ready.",
         lambda p: 1 if p.get("state") == "ready" else 0),
        ("pns_pts_running", "gauge", "Runs executing now.", lambda p: p.get("running")),
        ("pns_pts_queued", "gauge", "Runs waiting for a slot (queue depth).",
         lambda p: p.get("queued")),
        ("pns_worker_restarts_total", "counter", "Worker restarts.", lambda p: p.get("restarts")),
    )
    lines: list[str] = []
    for name, kind, text, read in figures:
        samples = [(pname, read(info)) for pname, info in sorted(pts.items())]
        present = [(pname, v) for pname, v in samples if isinstance(v, int | float)]
        if present:
            lines += _header(name, kind, text)
            lines += [_sample(name, {"pts": pname}, v) for pname, v in present]
    return lines


def _refusal_lines(refusals: Mapping[str, Any]) -> list[str]:
    """Messages the daemon refused at its front door, by reason (the protocol error code)."""
    counts = refusals.get("refused") or {}
    name = "pns_protocol_refused_total"
    lines = _header(name, "counter", "Protocol messages the daemon refused, by reason.")
    return lines + [_sample(name, {"reason": str(reason)}, count)
                    for reason, count in sorted(counts.items()) if isinstance(count, int)]


# -- exposition format ------------------------------------------------------------------------

def _header(name: str, kind: str, text: str) -> list[str]:
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _sample(name: str, labels: Mapping[str, str], value: float) -> str:
    if labels:
        inner = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
        return f"{name}{{{inner}}} {_number(value)}"
    return f"{name} {_number(value)}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    return str(value) if isinstance(value, int) else repr(float(value))


def exposition(lines: Iterable[str]) -> str:
    return "\n".join(lines) + "\n"
