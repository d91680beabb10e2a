"""Memory: pnsd RSS idle, under load and after the run; per-worker RSS; pnsweb RSS.

VmRSS from /proc, sampled every 50 ms during every trial of the run. Peaks are reported per
kind of load: small requests (the direct, jobs and web areas) and large payloads (the payload
area), because a 16 MiB round trip raises the allocator's high-water mark for the rest of the
run. Baselines: the bare processes doing the same job — the bare echo server for pnsd, a bare
relay worker for a PNS worker, the bare aiohttp server for pnsweb — read the same way, in the
same run. Run last, so "after the run" is after every other load of this run.
"""

from __future__ import annotations

from bench.measure import Bench
from bench.report import Row, Target
from bench.stack import rss_mb
from harness.procs import children

NEEDS = ("base_echo", "base_relay", "base_web", "pnsd_on", "pnsweb")
SMALL = ("direct", "jobs", "web", "peer", "memory")
LABELS = {
    "memory.pnsd.idle": "pnsd RSS idle (after start)",
    "memory.pnsd.load": "pnsd RSS peak, small requests",
    "memory.pnsd.payload": "pnsd RSS peak, 1 and 16 MiB payloads",
    "memory.pnsd.after": "pnsd RSS idle after the whole run",
    "memory.worker": "RSS per worker process (echo-worker)",
    "memory.pnsweb.idle": "pnsweb RSS idle (after start)",
    "memory.pnsweb.load": "pnsweb RSS peak, small requests (32 conns)",
}


def run(bench: Bench) -> list[Row]:
    stack = bench.stack
    if bench.peak("pnsd_on", SMALL) is None or bench.peak("pnsweb", SMALL) is None:
        # nothing loaded them yet (e.g. --only memory): one short trial per side
        one = {"kind": "zmq_async", "inflight": 32}
        bench.interleave({"base": bench.zmq("base_echo", **one),
                          "pns": bench.zmq("pnsd_on", pts="echo", **one)}, trials=1)
        bench.interleave({"base": bench.http("base_web", "POST", "/jsonecho", body={"x": 1}),
                          "pns": bench.http("pnsweb", "POST", "/v0.6/echo", body={"x": 1})},
                         trials=1)
    status = stack.pnsd_status("pnsd_on")["pts"]["echo-worker"]
    pids = status.get("pids") or (status.get("details") or {}).get("pids") or []
    stack["pnsd_on"].child.extra_pids.update(int(p) for p in pids)
    worker_rss = [v for v in (rss_mb(int(p)) for p in pids) if v is not None]
    bare_rss = [v for v in (rss_mb(p) for p in children(stack["base_relay"].pid))
                if v is not None]
    pnsd, pnsweb = stack["pnsd_on"], stack["pnsweb"]
    payload = ("payload",)
    rows = [
        Row("memory", "memory.pnsd.idle", LABELS["memory.pnsd.idle"], "MB", pns=pnsd.rss_start,
            base=stack["base_echo"].rss_start, base_label="bare echo server",
            lower_is_better=True, target=Target("<=", 60, on="pns", source="issue 7"),
            note="The daemon serves the 8 demo PTS; worker processes are separate."),
        Row("memory", "memory.pnsd.load", LABELS["memory.pnsd.load"], "MB",
            pns=bench.peak("pnsd_on", SMALL), base=bench.peak("base_echo", SMALL),
            base_label="bare echo server, same loads", lower_is_better=True,
            note="Peak VmRSS over every small-request trial (direct, jobs, web areas)."),
        Row("memory", "memory.pnsd.payload", LABELS["memory.pnsd.payload"], "MB",
            pns=bench.peak("pnsd_on", payload), base=bench.peak("base_echo", payload),
            base_label="bare echo server, same payloads", lower_is_better=True,
            note="Peak VmRSS during the payload area (one request at a time)."
            if bench.peak("pnsd_on", payload) else "not measured: the payload area did not run"),
        Row("memory", "memory.pnsd.after", LABELS["memory.pnsd.after"], "MB",
            pns=rss_mb(pnsd.pid), base=rss_mb(stack["base_echo"].pid),
            base_label="bare echo server after the same run", lower_is_better=True,
            note=f"pnsd grew from {pnsd.rss_start or 0:.1f} MB at start (allocator high-water, "
                 f"SQLite page cache, recent job records)."),
        Row("memory", "memory.worker", LABELS["memory.worker"], "MB",
            pns=max(worker_rss) if worker_rss else None,
            base=max(bare_rss) if bare_rss else None, base_label="bare relay echo worker",
            lower_is_better=True,
            note=f"Largest of {len(worker_rss)} workers: "
                 f"{', '.join(f'{v:.1f}' for v in worker_rss)} MB."),
        Row("memory", "memory.pnsweb.idle", LABELS["memory.pnsweb.idle"], "MB",
            pns=pnsweb.rss_start, base=stack["base_web"].rss_start,
            base_label="bare aiohttp server", lower_is_better=True),
        Row("memory", "memory.pnsweb.load", LABELS["memory.pnsweb.load"], "MB",
            pns=bench.peak("pnsweb", SMALL), base=bench.peak("base_web", SMALL),
            base_label="bare aiohttp server, same loads", lower_is_better=True),
    ]
    return rows
