"""PNS against a real peer, an area of its own: pygeoapi's hello-world under the same wrk load.

PNS: ``POST /v1/processes/echo/execution`` through pnsweb (every run recorded, its default).
The peer (:mod:`bench.peer`): pygeoapi 0.24 under gunicorn with 2 uvicorn workers, its
``hello-world`` process without a job manager (it records nothing: its fastest configuration)
and with its TinyDB one; 32 connections and 1. Targets (issue 16): PNS >= the peer without a
job store, at 32 connections and at 1. If the peer cannot be installed or started, the rows
say why. Its own area so that the comparison alone is quick to run again
(``python -m bench --only peer``, about a minute).
"""

from __future__ import annotations

from bench import peer
from bench.loads import SMALL
from bench.measure import Bench, cpu_note, loader_note
from bench.report import Row, Target
from bench.services import WEB_USER

LABELS = {
    "web.peer.32": "web /v1 echo vs pygeoapi hello-world (no job manager), 32 conns",
    "web.peer.1": "web /v1 echo vs pygeoapi hello-world (no job manager), 1 conn",
    "web.peer.tinydb.32": "web /v1 echo vs pygeoapi hello-world (TinyDB jobs), 32 conns",
    "web.peer.tinydb.1": "web /v1 echo vs pygeoapi hello-world (TinyDB jobs), 1 conn",
}
PEER = "pygeoapi 0.24, gunicorn + 2 uvicorn workers"
NEEDS = ("pnsweb",)


def run(bench: Bench) -> list[Row]:
    try:
        for name, tinydb in (("peer", False), ("peer_tinydb", True)):
            peer.start(bench.stack, name, tinydb=tinydb)
    except (peer.PeerUnavailable, RuntimeError, TimeoutError, OSError) as exc:
        why = f"not measured: pygeoapi could not be set up here: {exc}"[:600]
        return [Row("peer", key, label, "/s", note=why,
                    target=Target(">=", 1.0, source="issue 16") if "tinydb" not in key else None)
                for key, label in LABELS.items()]
    try:
        return [row for conns in (32, 1) for row in _rows(bench, conns)]
    finally:
        peer.stop(bench.stack, "peer")
        peer.stop(bench.stack, "peer_tinydb")


def _rows(bench: Bench, conns: int) -> list[Row]:
    aggs = bench.interleave({
        "peer": bench.http("peer", "POST", peer.PATH, body=peer.BODY, conns=conns,
                           expect=peer.EXPECT),
        "tinydb": bench.http("peer_tinydb", "POST", peer.PATH, body=peer.BODY, conns=conns,
                             expect=peer.EXPECT, warmup=20),
        "pns": bench.http("pnsweb", "POST", "/v1/processes/echo/execution",
                          body={"inputs": {"value": SMALL}}, auth=f"{WEB_USER}:{WEB_USER}",
                          conns=conns, expect="stranger"),
    })
    rows = []
    for key, side, target, note in (
        (f"web.peer.{conns}", "peer", Target(">=", 1.0, source="issue 16"),
         "pygeoapi without a job manager records nothing; PNS records every run "
         "(record_sync_runs = true)."),
        (f"web.peer.tinydb.{conns}", "tinydb", None,
         "For information: pygeoapi with its TinyDB job manager records each run as a job, "
         "as PNS does."),
    ):
        pns, base = aggs["pns"], aggs[side]
        text = note + cpu_note(pns, base, base_name="pygeoapi") + loader_note(pns, base)
        problems = pns.problems() or base.problems()
        if problems:
            text += f" First error: {problems}"
        rows.append(Row("peer", key, LABELS[key], "/s", pns=pns.rate, base=base.rate,
                        base_label=f"{PEER}, {'TinyDB' if side == 'tinydb' else 'no'} jobs",
                        pns_lat=pns.lat, base_lat=base.lat, target=target, note=text,
                        errors=pns.errors + base.errors))
    return rows

