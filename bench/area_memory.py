"""Memory: pnsd RSS idle and under load, per-worker RSS, pnsweb RSS (VmRSS from /proc).

Baselines: the bare processes doing the same job — the bare echo server for pnsd, a bare relay
worker for a PNS worker, the bare aiohttp server for pnsweb — read the same way in the same run.
Run last, so "after the run" is pnsd after every other load of this run.
"""

from __future__ import annotations

from bench.measure import Bench
from bench.procs import children, rss_mb
from bench.report import Row, Target

NEEDS = ("base_echo", "base_relay", "base_web", "pnsd_on", "pnsweb")
LABELS = {
    "memory.pnsd.idle": "pnsd RSS idle (after start)",
    "memory.pnsd.load": "pnsd RSS peak under load (32 in flight)",
    "memory.worker": "RSS per worker process (echo-worker)",
    "memory.pnsweb.idle": "pnsweb RSS idle (after start)",
    "memory.pnsweb.load": "pnsweb RSS peak under load (32 conns)",
}


def run(bench: Bench) -> list[Row]:
    stack = bench.stack
    one = {"kind": "zmq_async", "inflight": 32}
    zmq = bench.interleave({"base": bench.zmq("base_echo", **one),
                            "pns": bench.zmq("pnsd_on", pts="echo", **one)}, trials=1)
    web = bench.interleave({"base": bench.http("base_web", "POST", "/echo", body={"x": 1}),
                            "pns": bench.http("pnsweb", "POST", "/v0.6/echo", body={"x": 1})},
                           trials=1)
    status = stack.pnsd_status("pnsd_on")["pts"]["echo-worker"]
    pids = status.get("pids") or (status.get("details") or {}).get("pids") or []
    stack["pnsd_on"].child.extra_pids.update(int(p) for p in pids)
    worker_rss = [v for v in (rss_mb(int(p)) for p in pids) if v is not None]
    bare_rss = [v for v in (rss_mb(p) for p in children(stack["base_relay"].pid))
                if v is not None]
    pnsd, pnsweb = stack["pnsd_on"], stack["pnsweb"]
    after = rss_mb(pnsd.pid)
    web_peak = max(web["pns"].peak_rss.get("pnsweb", 0.0), getattr(bench, "web_peak", 0.0))
    return [
        Row("memory", "memory.pnsd.idle", LABELS["memory.pnsd.idle"], "MB", pns=pnsd.rss_start,
            base=stack["base_echo"].rss_start, base_label="bare echo server",
            lower_is_better=True, target=Target("<=", 60, on="pns", source="issue 7"),
            note=f"After every load of this run pnsd holds {after or 0:.1f} MB (SQLite page "
                 f"cache, recent job records, allocator high-water). The daemon serves the "
                 f"8 demo PTS; worker processes are separate (next rows)."),
        Row("memory", "memory.pnsd.load", LABELS["memory.pnsd.load"], "MB",
            pns=zmq["pns"].peak_rss.get("pnsd_on"), base=zmq["base"].peak_rss.get("base_echo"),
            base_label="bare echo server, same load", lower_is_better=True,
            note="Peak VmRSS sampled every 50 ms during one inproc echo trial."),
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
            pns=web_peak or None, base=web["base"].peak_rss.get("base_web"),
            base_label="bare aiohttp server, same load", lower_is_better=True),
    ]
