"""Asynchronous jobs: N submissions of echo (32 in flight), then every result collected.

PNS runs on the daemon with ``record_sync_runs = false`` so that its database holds only these
jobs. Baseline: :mod:`bench.base_jobs`, a bare asyncio ROUTER over SQLite (WAL, group commit)
that commits each submission before answering it.
"""

from __future__ import annotations

from pathlib import Path

from bench.measure import Bench, cpu_note
from bench.report import Row, Target

NEEDS = ("pnsd_off", "base_jobs")
LABELS = {
    "jobs.rate": "async submit + collect echo jobs (32 in flight)",
    "jobs.db": "database size per 10,000 jobs",
}


def db_bytes(db: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        path = db.with_name(db.name + suffix)
        if path.exists():
            total += path.stat().st_size
    files = db.parent / "jobs"
    if files.is_dir():
        total += sum(p.stat().st_size for p in files.rglob("*") if p.is_file())
    return total


def run(bench: Bench) -> list[Row]:
    count = bench.plan.jobs
    cmd = {"kind": "jobs", "count": count, "inflight": 32, "seconds": 120.0}
    aggs = bench.interleave({"base": bench.zmq("base_jobs", **cmd),
                             "pns": bench.zmq("pnsd_off", pts="echo", **cmd)})
    pns, base = aggs["pns"], aggs["base"]
    home = bench.stack["pnsd_off"].home
    assert home is not None
    pns_db, base_db = db_bytes(home / "jobs.db"), db_bytes(bench.stack["base_jobs"].info["db"])
    pns_jobs, base_jobs = pns.total("submitted"), base.total("submitted")
    missing = pns.total("missing") + pns.total("wrong")
    note = (f"{len(pns.results)} trials of {count:,} jobs: every job submitted, then every "
            f"result collected and compared with its input. PNS: {pns.total('submitted'):,} "
            f"submitted, {missing} missing or wrong, {pns.total('busy')} busy refusals "
            f"retried; submit phase median {pns.median('submit_s') or 0:.2f} s, collect "
            f"{pns.median('collect_s') or 0:.2f} s. Bare: {base.total('missing')} missing.")
    note += cpu_note(pns, base)
    if pns.problems():
        note += f" First error: {pns.problems()}"
    per = 10_000
    size_note = (f"jobs.db + WAL + SHM (+ jobs/ files) after {pns_jobs:,} jobs: "
                 f"{pns_db / 1e6:.1f} MB in total; bare: {base_db / 1e6:.1f} MB for "
                 f"{base_jobs:,}. Lower is better.")
    return [
        Row("jobs", "jobs.rate", LABELS["jobs.rate"], "/s", pns=pns.rate, base=base.rate,
            base_label="bare ROUTER + SQLite WAL group commit", note=note,
            errors=pns.errors + missing, target=Target(">=", 0.4, source="issue 16")),
        Row("jobs", "jobs.db", LABELS["jobs.db"], "MB",
            pns=pns_db / pns_jobs * per / 1e6 if pns_jobs else None,
            base=base_db / base_jobs * per / 1e6 if base_jobs else None,
            base_label="bare job table", lower_is_better=True, note=size_note),
    ]
