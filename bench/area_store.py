"""The shared job store: the same loads on a pnsd whose jobs live on PostgreSQL and on one
whose jobs live in SQLite (the embedded default), measured in the same run.

Rows: async submit + collect (the ``jobs`` area's load, record_sync_runs off on both) and sync
``/v1`` echo through pnsweb with recording on. The PostgreSQL server is a real one started for
the run (``initdb`` in a temporary directory, fsync on, as in production); SQLite runs WAL with
``synchronous=NORMAL``, which does not flush at each commit, so the comparison charges the
server store for its durability as well as for its round trips.
"""

from __future__ import annotations

from bench.area_web import AUTH
from bench.loads import SMALL
from bench.measure import Bench, cpu_note
from bench.report import Row, Target

NEEDS = ("pnsd_off", "pnsd_pg_off", "pnsweb", "pnsweb_pg")
LABELS = {
    "store.jobs.pg": "async submit + collect echo jobs on PostgreSQL (32 in flight)",
    "store.web.pg": "web POST /v1/processes/echo/execution recorded on PostgreSQL, 32 conns",
}


def run(bench: Bench) -> list[Row]:
    cmd = {"kind": "jobs", "count": bench.plan.jobs, "inflight": 32, "seconds": 120.0}
    jobs = bench.interleave({"base": bench.zmq("pnsd_off", pts="echo", **cmd),
                             "pns": bench.zmq("pnsd_pg_off", pts="echo", **cmd)})
    body = {"inputs": {"value": SMALL}}
    web = bench.interleave({
        "base": bench.http("pnsweb", "POST", "/v1/processes/echo/execution", body=body,
                           auth=AUTH, expect="stranger"),
        "pns": bench.http("pnsweb_pg", "POST", "/v1/processes/echo/execution", body=body,
                          auth=AUTH, expect="stranger")})
    rows = []
    for key, aggs, base_label, target in (
            ("store.jobs.pg", jobs, "the same on SQLite", 0.5),
            ("store.web.pg", web, "the same on SQLite (recording on)", 0.8)):
        pns, base = aggs["pns"], aggs["base"]
        missing = pns.total("missing") + pns.total("wrong")
        note = (f"{len(pns.results)} interleaved trials each. PostgreSQL side: "
                f"{missing} missing or wrong results, {pns.total('busy')} busy refusals."
                + cpu_note(pns, base, base_name="SQLite"))
        if pns.problems() or base.problems():
            note += f" First error: {pns.problems() or base.problems()}"
        rows.append(Row("store", key, LABELS[key], "/s", pns=pns.rate, base=base.rate,
                        base_label=base_label, pns_lat=pns.lat, base_lat=base.lat,
                        target=Target(">=", target, source="issue 17"), note=note,
                        errors=pns.errors + base.errors + missing))
    return rows
