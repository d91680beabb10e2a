"""Large payload round trips, 1, 16 and 64 MiB, direct and through the web.

Throughput is payload bytes sent plus bytes received per second of round trip (both ways
count, since both are copied), one request at a time (and 1 MiB with 32 in flight on one
client). Direct: ``run`` of inproc ``echo`` with a ``bytes`` input (PNS sends values >= 64 KiB
as their own zero-copy frame) against the bare ROUTER echo with the bytes as a frame of its
own. Web: ``/v1`` execute of ``echo`` with a JSON string of the size as the input, answered raw
(the string as JSON), against the bare aiohttp -> ZeroMQ handler doing the same JSON parse /
msgpack / JSON dump. 64 MiB is over one message: PNS uploads the input in parts and reads
the result in chunks (the bare servers take it in one message). Memory: pnsd's and pnsweb's
peak RSS during the 16 MiB trials above their RSS at start, against four times the payload
(issue 16).
"""

from __future__ import annotations

from bench.measure import Agg, Bench, cpu_note
from bench.report import Row, Target
from bench.services import WEB_USER

NEEDS = ("base_echo", "pnsd_on", "pnsweb", "base_web")
MIB = 2**20
LABELS = {
    "payload.direct.1": "1 MiB round trip, direct",
    "payload.direct.16": "16 MiB round trip, direct",
    "payload.web.1": "1 MiB round trip, web /v1",
    "payload.web.16": "16 MiB round trip, web /v1",
    "payload.direct.64": "64 MiB round trip, direct (streamed)",
    "payload.web.64": "64 MiB round trip, web /v1 (streamed)",
    "payload.direct.1.par": "1 MiB round trips, direct, 32 in flight",
    "payload.rss.pnsd": "pnsd RSS rise within a 16 MiB trial",
    "payload.rss.pnsweb": "pnsweb RSS rise within a 16 MiB trial",
}
TARGETS = {     # issue 16: ratios to the bare pair measured in the same run
    "payload.direct.1": Target(">=", 0.20, source="issue 16"),
    "payload.direct.16": Target(">=", 0.25, source="issue 16"),
    "payload.web.1": Target(">=", 0.70, source="issue 16"),
    "payload.web.16": Target(">=", 0.70, source="issue 16"),
}


def mbps(agg: Agg, per_call: float) -> float | None:
    rate = agg.rate
    return None if rate is None else rate * per_call / 1e6


def run(bench: Bench) -> list[Row]:
    rows = []
    seconds = bench.plan.payload_seconds
    rises: dict[str, float] = {}    # MB: the most RSS rose within one 16 MiB trial
    peaks: dict[str, float] = {}
    for mib in (1, 16, 64):
        size = mib * MIB
        cmd = {"kind": "zmq_seq", "blob_size": size, "seconds": seconds, "count": 400,
               "warmup": 0 if bench.plan.quick or mib == 64 else 2, "call_timeout": 120.0,
               "streamed": mib == 64}
        aggs = bench.interleave({"base": bench.zmq("base_echo", **cmd),
                                 "pns": bench.zmq("pnsd_on", pts="echo", **cmd)})
        rows.append(_row(f"payload.direct.{mib}", aggs, 2 * size, "bare ROUTER echo, blob frame"))
        if mib == 16:
            rises["pnsd"] = aggs["pns"].rss_rise.get("pnsd_on", 0.0)
            peaks["pnsd"] = aggs["pns"].peak_rss.get("pnsd_on", 0.0)
    rows.append(_parallel(bench, seconds))
    for mib in (1, 16, 64):
        size = mib * MIB
        common = {"string_size": size, "ogc": True, "conns": 1, "seconds": seconds,
                  "count": 400, "warmup": 0 if bench.plan.quick or mib == 64 else 1,
                  "call_timeout": 180.0}
        aggs = bench.interleave({
            "base": bench.http("base_web", "POST", "/v1echo", **common),
            "pns": bench.http("pnsweb", "POST", "/v1/processes/echo/execution", auth=
                              f"{WEB_USER}:{WEB_USER}", **common)})
        per_call = (aggs["pns"].median("request_bytes") or 0) + size
        rows.append(_row(f"payload.web.{mib}", aggs, per_call, "bare aiohttp -> ZeroMQ -> echo"))
        if mib == 16:
            for service, name in (("pnsd", "pnsd_on"), ("pnsweb", "pnsweb")):
                rises[service] = max(rises.get(service, 0.0), aggs["pns"].rss_rise.get(name, 0.0))
                peaks[service] = max(peaks.get(service, 0.0), aggs["pns"].peak_rss.get(name, 0.0))
    return rows + _memory_rows(bench, rises, peaks)


def _parallel(bench: Bench, seconds: float) -> Row:
    """1 MiB round trips, 32 in flight on one client (PNS's AsyncClient, a bare DEALER)."""
    cmd = {"kind": "zmq_async", "inflight": 32, "blob_size": MIB, "seconds": seconds,
           "count": 2000, "warmup": 0 if bench.plan.quick else 32, "warmup_seconds": 0.5,
           "call_timeout": 60.0}
    aggs = bench.interleave({"base": bench.zmq("base_echo", **cmd),
                             "pns": bench.zmq("pnsd_on", pts="echo", **cmd)})
    return _row("payload.direct.1.par", aggs, 2 * MIB, "bare ROUTER echo, blob frame")


def _memory_rows(bench: Bench, rises: dict[str, float], peaks: dict[str, float]) -> list[Row]:
    """How far RSS rose during a 16 MiB trial above its level as the trial began (the
    service at rest, after the areas before): <= 4x the payload."""
    rows = []
    limit = 4 * 16 * MIB / 1e6
    for service, name in (("pnsd", "pnsd_on"), ("pnsweb", "pnsweb")):
        start = bench.stack[name].rss_start or 0.0
        peak = peaks.get(service)
        rows.append(Row("payload", f"payload.rss.{service}", LABELS[f"payload.rss.{service}"],
                        "MB", pns=rises.get(service) if peak else None, lower_is_better=True,
                        target=Target("<=", limit, on="pns", source="issue 16"),
                        note=f"The most VmRSS rose during one 16 MiB trial (direct and /v1) "
                             f"above its level when that trial began; limit: 4x the payload. "
                             f"VmRSS after start {start:.0f} MB, peak in those trials "
                             f"{peak or 0:.0f} MB ({(peak or 0) - start:.0f} MB above start: "
                             f"the areas before leave memory held)."))
    return rows


def _row(key: str, aggs: dict[str, Agg], per_call: float, base_label: str) -> Row:
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
               base_lat=base.lat, target=TARGETS.get(key), note=note,
               errors=pns.errors + base.errors)
