"""The bench command line: pick areas, start what they need, measure, write the report.

``python -m bench [--quick] [--only AREA[,AREA]] [--out DIR] [--trials N]``. Areas run in a
fixed order (memory last); an area that fails or does not fit the time budget leaves
"not measured" rows rather than stopping the run. Exit status 0 when the report was written
(targets missed are findings, not failures), 1 when no area produced a figure.
"""

from __future__ import annotations

import argparse
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import msgpack
import zmq

from bench import (
    area_direct,
    area_jobs,
    area_memory,
    area_payload,
    area_peer,
    area_remote,
    area_store,
    area_swap,
    area_web,
    report,
    wrk,
)
from bench.measure import Bench, Plan
from bench.report import Row
from bench.stack import Stack

AREAS: dict[str, ModuleType] = {
    "direct": area_direct, "jobs": area_jobs, "store": area_store, "web": area_web,
    "peer": area_peer, "payload": area_payload, "swap": area_swap, "memory": area_memory,
    "remote": area_remote,
}
ALWAYS = ("memory",)    # a few seconds, and its idle figures were read at start anyway
HTTP_AREAS = {"web", "peer", "payload"}     # the areas with HTTP rows
NOTES = [
    "Every PNS process is real: `python -m pnsd start --home <tmp> --config <cfg>` "
    "(`[pnsd]` home, `log_level = \"warning\"`) and `python -m pnsweb -u bench -p bench --ip "
    "127.0.0.1 --port <free>`; ipc:// sockets under one short /tmp directory; TCP on loopback.",
    "Two daemons run side by side: the default (`record_sync_runs = true`, used for every "
    "figure unless said otherwise) and one with `record_sync_runs = false` (recording "
    "comparison; the async jobs, so its database holds only them).",
    "Baselines are small modules of this package, each its own process: `base_echo` (asyncio "
    "ROUTER echo with batch draining), `base_relay` (ROUTER relay + 2 DEALER echo workers), "
    "`base_web` (aiohttp hello; aiohttp -> ZeroMQ -> base_echo; on asyncio's own loop, and as "
    "`base_web_uv` on uvloop, which pnsweb serves on), `base_spawn` (aiohttp "
    "spawning runPTS per request), `base_jobs` (ROUTER + SQLite WAL group commit), "
    "`base_stream` (the echo over a Unix stream socket, and `base_web_stream`, the aiohttp "
    "handlers in front of it: the hop rows).",
    "Load comes from one separate agent process (`bench.agent`): PNS's own `Client` "
    "(blocking, sequential) and `AsyncClient` (32 calls in flight on one socket) for the "
    "daemon; bare DEALERs of the same shapes for the bare servers; for HTTP, wrk (the "
    "distribution's package, which `make bench` installs as root; one thread, a Lua script "
    "setting method, body and headers; 32 keep-alive connections unless said) times each "
    "phase, after a warm-up by a small asyncio HTTP/1.1 client (`bench.httpload`) that also "
    "checks a reply's body; without wrk that client times the phase too. Measured side by "
    "side, wrk sees PNS at 1.5-2x what the Python client reports, since the client shares "
    "the 2 cores.",
    "pnsweb serves from its default number of processes (one per core).",
    "The peer rows start pygeoapi 0.24 (`bench.peer`: a venv of its own made once with "
    "Python 3.12 from pyenv, under ~/.cache/pns-bench) under gunicorn with 2 uvicorn "
    "workers, as its documentation recommends for production.",
    "Trials are interleaved (baseline, PNS, baseline, PNS, …); each is bounded by a count and a "
    "deadline after a short warm-up; the figure is the median over trials, latencies are the "
    "medians of each trial's p50 / p99. Ratios are PNS / baseline; only ratios from one run "
    "are meaningful on this shared machine.",
    "Profiled causes of the misses and proposed fixes: `bench/FINDINGS.md` (a dated "
    "snapshot; it is written by hand, not by this run).",
    "The chart (`report.png`) is drawn by `bench.chart` with matplotlib (the `bench` extra, "
    "which `make bench` installs).",
]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (< 90 s)")
    parser.add_argument("--only", default="", help=f"areas, comma-separated: {', '.join(AREAS)}")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="where report.md / report.png / report.json go")
    parser.add_argument("--trials", type=int, help="interleaved trials per figure")
    parser.add_argument("--budget", type=float,
                        help="seconds of measuring after which remaining areas are skipped")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (logs, databases) afterwards")
    return parser.parse_args(argv)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt   # unwinds through every finally: processes get stopped


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    names = [a.strip() for a in args.only.split(",") if a.strip()] or list(AREAS)
    unknown = [n for n in names if n not in AREAS]
    if unknown:
        print(f"bench: unknown area(s) {', '.join(unknown)}; known: {', '.join(AREAS)}",
              file=sys.stderr)
        return 2
    areas = [n for n in AREAS if n in names]
    try:    # checked before measuring: a run of many minutes must not end without its chart
        from bench import chart  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        print(f"bench: the chart needs {exc.name}: pip install -e '.[bench]' (make bench does)",
              file=sys.stderr)
        return 2
    plan = Plan.of(quick=args.quick, trials=args.trials, budget=args.budget)
    signal.signal(signal.SIGTERM, _terminate)
    # HTTP rows are timed by wrk (installed here if need be); the Python client stands in
    no_wrk = wrk.ensure() if set(areas) & HTTP_AREAS else "not needed"
    if no_wrk and set(areas) & HTTP_AREAS:
        print(f"bench: {no_wrk}; HTTP rows use the Python client", flush=True)
    started = time.monotonic()
    rows: list[Row] = []
    with Stack(keep=args.keep) as stack:
        needs = [s for area in areas for s in AREAS[area].NEEDS]
        print(f"bench: starting {', '.join(dict.fromkeys(needs))} in {stack.tmp}", flush=True)
        stack.start(list(dict.fromkeys(needs)))
        bench = Bench(stack, plan)
        for area in areas:
            rows += run_area(bench, area)
    wall = time.monotonic() - started
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"quick": plan.quick, "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "cpus": _cpus(), "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            "msgpack": ".".join(map(str, msgpack.version)), "aiohttp": aiohttp.__version__,
            "trials": plan.trials, "seconds": plan.seconds, "wall": wall, "areas": areas,
            "machine": platform.machine(), "wrk": no_wrk or "installed"}
    chart.draw(rows, args.out / "report.png")
    report.write(args.out, rows, meta=meta, notes=NOTES, chart="report.png")
    print()
    print(report.stdout_table(rows))
    print(f"\nbench: {wall:.0f} s; wrote {args.out / 'report.md'} and report.png")
    return 0 if any(r.measured for r in rows) else 1


def run_area(bench: Bench, area: str) -> list[Row]:
    module = AREAS[area]
    if bench.over_budget() and area not in ALWAYS:
        return _placeholders(module, area, "not measured: the run's time budget was spent")
    t0 = time.monotonic()
    bench.area = area
    print(f"bench: {area} ...", flush=True)
    try:
        rows: list[Row] = module.run(bench)
    except Exception as exc:  # one broken area must not lose the others
        traceback.print_exc()
        return _placeholders(module, area, f"not measured: the area failed: {exc}")
    print(f"bench: {area} done in {time.monotonic() - t0:.0f} s", flush=True)
    print(report.stdout_table(rows), flush=True)
    return rows


def _placeholders(module: ModuleType, area: str, why: str) -> list[Row]:
    return [Row(area, key, label, "/s", note=why) for key, label in module.LABELS.items()]


def _cpus() -> int:
    import os  # noqa: PLC0415

    return len(os.sched_getaffinity(0))
