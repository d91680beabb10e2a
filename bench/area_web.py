"""HTTP through pnsweb: ``/v1`` sync execution, ``/v0.6/echo``, ``GET /v0.6/``, ``/v0.6/testrun``.

Load: :mod:`bench.httpload` with 32 keep-alive connections (one for ``/testrun``: the hello PTS
takes one run at a time, like the reference). Baselines: :mod:`bench.base_web` (a bare
aiohttp handler doing one ZeroMQ round trip to the bare echo process; a bare aiohttp hello) and
:mod:`bench.base_spawn` (a process spawned per request). pnsweb serves on uvloop; the targets
are against the bare handlers on asyncio's own loop, as issue 5 defines them, and rows marked
"uvloop baseline" show the same handlers on uvloop, for information. The reference
implementation's figures come from another run (wrk, 8 connections) and are shown apart. The
timed phases run under wrk when it is installed (:mod:`bench.wrk`). The peer rows, PNS against
pygeoapi under the same load, are an area of their own (:mod:`bench.area_peer`). The hop rows
weigh the hop itself: the bare ``/v1echo`` handler on uvloop with its echo over ZeroMQ, as
pnsweb reaches pnsd, against the same handler with its echo over a Unix stream
(:mod:`bench.base_stream`), at 32 connections and at 1, for information.
"""

from __future__ import annotations

from bench.loads import SMALL
from bench.measure import Agg, Bench, cpu_note, loader_note
from bench.report import Row, Target
from bench.services import WEB_USER

NEEDS = ("pnsweb", "base_web", "base_web_uv", "base_web_stream", "base_spawn")
LABELS = {
    "web.v1.echo": "web POST /v1/processes/echo/execution, 32 conns",
    "web.v06.echo": "web POST /v0.6/echo, 32 conns",
    "web.v06.get": "web GET /v0.6/, 32 conns",
    "web.v06.testrun": "web POST /v0.6/testrun, 1 conn",
}
HOP_LABEL = "bare aiohttp /v1echo on uvloop: ZeroMQ hop vs Unix stream hop, {} conn{}"
LABELS.update({f"web.hop.{conns}": HOP_LABEL.format(conns, "s" if conns > 1 else "")
               for conns in (32, 1)})
UV_SUFFIX = ", uvloop baseline"
LABELS.update({f"{key}.uv": LABELS[key] + UV_SUFFIX
               for key in ("web.v1.echo", "web.v06.echo", "web.v06.get")})
AUTH = f"{WEB_USER}:{WEB_USER}"
TESTRUN = {"creator": "bench", "rootcause": "bench", "input": {"theName": "stranger"}}


def web_row(key: str, pns: Agg, base: Agg, base_label: str, *, target: Target | None = None,
            ref: float | None = None, note: str = "", pns_name: str = "PNS") -> Row:
    note += cpu_note(pns, base, pns_name=pns_name)
    problems = pns.problems() or base.problems()
    if problems:
        note = f"{note} First error: {problems}".strip()
    busy = pns.total("busy")
    if busy:
        note += f" {busy} busy replies (409/429/503)."
    note += loader_note(pns, base)
    return Row("web", key, LABELS[key], "/s", pns=pns.rate, base=base.rate, base_label=base_label,
               pns_lat=pns.lat, base_lat=base.lat, target=target, ref=ref, note=note,
               errors=pns.errors + base.errors)


def run(bench: Bench) -> list[Row]:
    rows = []
    cases = (
        ("web.v1.echo",
         bench.http("base_web", "POST", "/v1echo", body={"inputs": {"value": SMALL}},
                    expect="stranger"),
         bench.http("pnsweb", "POST", "/v1/processes/echo/execution",
                    body={"inputs": {"value": SMALL}}, auth=AUTH, expect="stranger"),
         "bare aiohttp -> ZeroMQ -> echo process", Target(">=", 0.6, source="issue 5/7"), None,
         "Basic auth bench:bench on every request (verified once, then cached by pnsweb); the "
         "reply is the raw JSON value."),
        ("web.v06.echo",
         bench.http("base_web", "POST", "/jsonecho", body=SMALL, expect="stranger"),
         bench.http("pnsweb", "POST", "/v0.6/echo", body=SMALL, expect="stranger"),
         "bare aiohttp JSON echo", None, 1700.0,
         "pnsweb answers /v0.6/echo itself (no daemon call), so the baseline is a bare aiohttp "
         "handler that parses the JSON body and sends it back; the ZeroMQ-hop comparison is "
         "the /v1 row. The reference figure comes from another run on another day: for "
         "information (issue 16 dropped the > 10x target)."),
        ("web.v06.get",
         bench.http("base_web", "GET", "/hello", expect="hello"),
         bench.http("pnsweb", "GET", "/v0.6/", expect="APIs"),
         "bare aiohttp hello handler", None, 1400.0,
         "PNS answers the API listing (20 routes, absolute URLs; its JSON made once per "
         "origin) with a fresh timestamp; the baseline answers a constant. The reference "
         "figure is for information (issue 16 dropped the > 10x target)."),
        ("web.v06.testrun",
         bench.http("base_spawn", "POST", "/testrun", body=TESTRUN, conns=1,
                    expect="hello stranger", warmup=3),
         bench.http("pnsweb", "POST", "/v0.6/testrun", body=TESTRUN, conns=1, auth=AUTH,
                    expect="hello stranger", warmup=3),
         "aiohttp spawning runPTS per request", None, 63.0,
         "One connection: the hello PTS has queue = 0 (the reference's 409 busy rule)."),
    )
    for key, base_cmd, pns_cmd, base_label, target, ref, note in cases:
        loads = {"base": base_cmd, "pns": pns_cmd}
        if key + ".uv" in LABELS:
            loads["uv"] = {**base_cmd, "port": bench.stack["base_web_uv"].port,
                           "_sample": ["base_web_uv", "base_echo"]}
        aggs = bench.interleave(loads)
        rows.append(web_row(key, aggs["pns"], aggs["base"], base_label, target=target, ref=ref,
                            note=note))
        if "uv" in aggs:
            rows.append(web_row(
                key + ".uv", aggs["pns"], aggs["uv"], base_label + ", on uvloop",
                note="For information: pnsweb serves on uvloop; this is the same bare handler "
                     "on uvloop too, where the row above has it on asyncio's own loop."))
        bench.web_peak = max(getattr(bench, "web_peak", 0.0),
                             aggs["pns"].peak_rss.get("pnsweb", 0.0))
    return rows + [_hop_row(bench, conns) for conns in (32, 1)]


def _hop_row(bench: Bench, conns: int) -> Row:
    """The bare pair with its echo over ZeroMQ (the hop pnsweb -> pnsd is) against the same
    over a Unix stream: what the hop's transport costs, with nothing of PNS in either."""
    load = {"body": {"inputs": {"value": SMALL}}, "expect": "stranger", "conns": conns}
    aggs = bench.interleave({
        "zmq": bench.http("base_web_uv", "POST", "/v1echo", **load),
        "stream": bench.http("base_web_stream", "POST", "/v1echo", **load),
    })
    return web_row(
        f"web.hop.{conns}", aggs["zmq"], aggs["stream"],
        "the same handler and echo over a Unix stream (4-byte lengths, as the stdio transport)",
        note="For information; neither column is PNS. The first is the bare pair over ZeroMQ "
             "ipc://, the transport between pnsweb and pnsd (a libzmq I/O thread on each "
             "side); the baseline sends the same frames over a Unix stream socket from the "
             "event loop itself.", pns_name="ZeroMQ pair")
