"""Large payload round trips, 1 MiB and 16 MiB, direct and through the web.

Throughput is payload bytes sent plus bytes received per second of round trip (both ways
count, since both are copied), one request at a time. Direct: ``run`` of inproc ``echo`` with
a ``bytes`` input (PNS sends values >= 64 KiB as their own zero-copy frame) against the bare
ROUTER echo with the bytes as a frame of its own. Web: ``/v1`` execute of ``echo`` with a JSON
string of the size as the input, answered raw (the string as JSON), against the bare aiohttp ->
ZeroMQ handler doing the same JSON parse / msgpack / JSON dump.
"""

from __future__ import annotations

from bench.measure import Agg, Bench, cpu_note
from bench.report import Row, Target
from bench.stack import WEB_USER

NEEDS = ("base_echo", "pnsd_on", "pnsweb", "base_web")
MIB = 2**20
LABELS = {
    "payload.direct.1": "1 MiB round trip, direct",
    "payload.direct.16": "16 MiB round trip, direct",
    "payload.web.1": "1 MiB round trip, web /v1",
    "payload.web.16": "16 MiB round trip, web /v1",
}


def mbps(agg: Agg, per_call: float) -> float | None:
    rate = agg.rate
    return None if rate is None else rate * per_call / 1e6


def run(bench: Bench) -> list[Row]:
    rows = []
    seconds = bench.plan.payload_seconds
    for mib in (1, 16):
        size = mib * MIB
        cmd = {"kind": "zmq_seq", "blob_size": size, "seconds": seconds, "count": 400,
               "warmup": 0 if bench.plan.quick else 2, "call_timeout": 30.0}
        aggs = bench.interleave({"base": bench.zmq("base_echo", **cmd),
                                 "pns": bench.zmq("pnsd_on", pts="echo", **cmd)})
        rows.append(_row(f"payload.direct.{mib}", aggs, 2 * size, "bare ROUTER echo, blob frame",
                         Target(">=", 1000, on="pns", source="issue 7") if mib == 16 else None))
    for mib in (1, 16):
        size = mib * MIB
        common = {"string_size": size, "ogc": True, "conns": 1, "seconds": seconds,
                  "count": 400, "warmup": 0 if bench.plan.quick else 1, "call_timeout": 60.0}
        aggs = bench.interleave({
            "base": bench.http("base_web", "POST", "/v1echo", **common),
            "pns": bench.http("pnsweb", "POST", "/v1/processes/echo/execution", auth=
                              f"{WEB_USER}:{WEB_USER}", **common)})
        per_call = (aggs["pns"].median("request_bytes") or 0) + size
        rows.append(_row(f"payload.web.{mib}", aggs, per_call, "bare aiohttp -> ZeroMQ -> echo",
                         Target(">=", 200, on="pns", source="issue 7") if mib == 16 else None))
    return rows


def _row(key: str, aggs: dict[str, Agg], per_call: float, base_label: str,
         target: Target | None) -> Row:
    pns, base = aggs["pns"], aggs["base"]
    peaks = ", ".join(f"{k} {v:.0f} MB" for k, v in pns.peak_rss.items())
    note = (f"MB/s = (bytes sent + bytes received) / round-trip time; round trip p50 "
            f"{(pns.lat[0] or 0) * 1e3:.1f} ms (PNS) vs {(base.lat[0] or 0) * 1e3:.1f} ms "
            f"(bare); peak RSS during the PNS trials: {peaks}.")
    note += cpu_note(pns, base)
    problems = pns.problems() or base.problems()
    if problems:
        note += f" First error: {problems}"
    return Row("payload", key, LABELS[key], "MB/s", pns=mbps(pns, per_call),
               base=mbps(base, per_call), base_label=base_label, pns_lat=pns.lat,
               base_lat=base.lat, target=target, note=note, errors=pns.errors + base.errors)
