"""``python -m faults``: run the fault suite (and the soak), print the table, exit 1 on failure.

Options: ``--quick`` (small counts: under two minutes), ``--only a,b`` (fault names, see
``--list``), ``--soak`` (only the soak), ``--soak-requests N`` (requests per path; the default
run uses 20,000, a full soak 200,000), ``--no-soak``.
"""

from __future__ import annotations

import argparse
import sys
import time

from faults import (
    crash_leftovers,
    daemon_kill,
    disk_full,
    flood,
    http_garbage,
    job_bursts,
    job_owners,
    model,
    protocol_garbage,
    replay,
    size_limits,
    slow_clients,
    soak,
    web_restart,
    worker_faults,
)
from faults.report import Row, table
from faults.runner import Fault, run_fault

FAULTS: tuple[Fault, ...] = (
    Fault("worker-kill", "SIGKILL of a worker mid-job", worker_faults.worker_kill),
    Fault("pnsd-kill", "SIGKILL of pnsd mid-load, then restart", daemon_kill.pnsd_kill),
    Fault("crash-leftovers", "SIGKILL of pnsd with busy processes: none outlive the restart",
          crash_leftovers.crash_leftovers),
    Fault("worker-stop", "SIGSTOP of a worker (hang)", worker_faults.worker_stop),
    Fault("web-restart", "pnsweb restarted under load", web_restart.web_restart),
    Fault("disk-full", "the job store's disk is full", disk_full.disk_full),
    Fault("protocol", "1,000 bad protocol messages", protocol_garbage.protocol_garbage),
    Fault("flood", "a flood of forged, stale and replayed messages", flood.flood),
    Fault("replay", "captured requests replayed within and after the window", replay.replay),
    Fault("http", "1,000 malformed HTTP requests", http_garbage.http_garbage),
    Fault("slowloris", "slow clients while others are served", slow_clients.slow_clients),
    Fault("size-limits", "over-size inputs, grown bodies, over-size results",
          size_limits.size_limits),
    Fault("submit-burst", "async submissions far beyond slots and queue",
          job_bursts.submit_burst),
    Fault("ownership", "two users and anonymous attack each other's jobs",
          job_owners.ownership),
    Fault("model", "model-based test: random deploys, runs, jobs, kills", model.model),
)
SOAK = Fault("soak", "echo soak: RSS, fds, processes", soak.soak)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faults", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (< 2 minutes)")
    parser.add_argument("--only", default="", help="comma-separated fault names")
    parser.add_argument("--soak", action="store_true", help="run only the soak")
    parser.add_argument("--no-soak", action="store_true", help="skip the soak")
    parser.add_argument("--soak-requests", type=int, default=None,
                        help="soak requests per path (default 20,000; quick 2,000)")
    parser.add_argument("--list", action="store_true", help="list the faults and exit")
    args = parser.parse_args(argv)
    everything = (*FAULTS, SOAK)
    if args.list:
        for fault in everything:
            print(f"{fault.name:12} {fault.title}")
        return 0
    chosen = _choose(args, everything)
    if chosen is None:
        return 2
    soak_requests = args.soak_requests or (2_000 if args.quick else 20_000)
    rows: list[Row] = []
    started = time.monotonic()
    for fault in chosen:
        print(f"faults: {fault.name}: {fault.title} ...", file=sys.stderr, flush=True)
        row = run_fault(fault, quick=args.quick, soak_requests=soak_requests)
        print(f"faults: {fault.name}: {row.verdict} in {row.seconds:.1f} s", file=sys.stderr,
              flush=True)
        rows.append(row)
    print(table(rows))
    print(f"total {time.monotonic() - started:.0f} s")
    return 0 if all(row.passed or row.skipped for row in rows) else 1


def _choose(args: argparse.Namespace, everything: tuple[Fault, ...]) -> list[Fault] | None:
    if args.soak:
        return [SOAK]
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        known = {fault.name: fault for fault in everything}
        unknown = [name for name in names if name not in known]
        if unknown:
            print(f"faults: unknown fault(s) {', '.join(unknown)}; see --list", file=sys.stderr)
            return None
        return [known[name] for name in names]
    return list(FAULTS) if args.no_soak else list(everything)


if __name__ == "__main__":
    sys.exit(main())
