"""Direct ZeroMQ ``run``: inproc, worker and process modes, stdio vs ZeroMQ workers, and
recording on vs off.

Baselines: the bare ROUTER echo (inproc), the bare 2-hop relay with two echo workers (worker
mode, like ``echo-worker``'s two workers): the relay giving each worker one request at a time
as PNS does (the targets, issue 16) and, for information, the round-robin one that queues
requests in each worker's socket (against ``echo-worker`` and ``echo-prefetch``, the same
with ``prefetch = 4``); running the hello scripts with no server at all (process mode), the
same daemon's ``echo-worker`` for ``echo-stdio`` (the same echo on two workers reached over
their pipes), and the same daemon with ``record_sync_runs = false`` (recording).
"""

from __future__ import annotations

from typing import Any

from bench.measure import Agg, Bench, cpu_note
from bench.report import Row, Target
from bench.services import RUN_PTS

NEEDS = ("base_echo", "base_relay", "base_relay_one", "pnsd_on", "pnsd_off")
LABELS = {
    "direct.inproc.seq": "direct run, inproc echo, sequential",
    "direct.inproc.32": "direct run, inproc echo, 32 in flight",
    "direct.worker.seq": "direct run, worker echo-worker, sequential",
    "direct.worker.32": "direct run, worker echo-worker, 32 in flight",
    "direct.worker.seq.one": "direct run, worker echo-worker, sequential, one-each relay",
    "direct.worker.32.one": "direct run, worker echo-worker, 32 in flight, one-each relay",
    "direct.worker.32.prefetch": "direct run, worker echo-prefetch (prefetch = 4), 32 in flight",
    "direct.process.seq": "direct run, process hello, sequential",
    "direct.stdio.seq": "direct run, stdio workers vs ZeroMQ workers, echo, sequential",
    "direct.stdio.32": "direct run, stdio workers vs ZeroMQ workers, echo, 32 in flight",
    "direct.hello.ratio": "hello-worker vs hello (process), sequential",
    "direct.record.seq": "recording on vs off, inproc echo, sequential",
    "direct.record.32": "recording on vs off, inproc echo, 32 in flight",
}


def pair_row(key: str, pns: Agg, base: Agg, base_label: str, *, target: Target | None = None,
             note: str = "") -> Row:
    note += cpu_note(pns, base)
    problems = pns.problems() or base.problems()
    if problems:
        note = f"{note} First error: {problems}".strip()
    return Row("direct", key, LABELS[key], "/s", pns=pns.rate, base=base.rate,
               base_label=base_label, pns_lat=pns.lat, base_lat=base.lat, target=target,
               note=note, errors=pns.errors + base.errors,
               extra={"pns_busy": pns.total("busy")})


def _stdio(bench: Bench, seq: dict[str, Any], par: dict[str, Any]) -> list[Row]:
    """echo-stdio (two workers on pipes) against echo-worker (two on ZeroMQ), same daemon."""
    rows = []
    for shape, suffix in ((seq, "seq"), (par, "32")):
        aggs = bench.interleave({"zmq": bench.zmq("pnsd_on", pts="echo-worker", **shape),
                                 "stdio": bench.zmq("pnsd_on", pts="echo-stdio", **shape)})
        rows.append(pair_row(f"direct.stdio.{suffix}", aggs["stdio"], aggs["zmq"],
                             "same daemon, echo-worker (ZeroMQ workers)",
                             target=Target(">=", 0.8, source="issue 19"),
                             note="Both PTS run pnsd.demo:echo on two workers; only the "
                                  "transport differs. Trials interleaved."))
    return rows


def run(bench: Bench) -> list[Row]:
    rows = []
    seq, par = {"kind": "zmq_seq"}, {"kind": "zmq_async", "inflight": 32}
    for mode, pts, base_name, base_label, targets in (
        ("inproc", "echo", "base_echo", "bare asyncio ROUTER echo",
         (Target(">=", 0.6, source="issue 7"), Target(">=", 0.5, source="issue 7"))),
        ("worker", "echo-worker", "base_relay", "bare 2-hop relay, 2 echo workers",
         (None, None)),
    ):
        for shape, target in zip((seq, par), targets, strict=True):
            loads = {"base": bench.zmq(base_name, **shape),
                     "pns": bench.zmq("pnsd_on", pts=pts, **shape)}
            if mode == "worker":
                loads["one"] = bench.zmq("base_relay_one", **shape)
                if shape is par:
                    loads["prefetch"] = bench.zmq("pnsd_on", pts="echo-prefetch", **shape)
            aggs = bench.interleave(loads)
            suffix = "seq" if shape is seq else "32"
            note = "Daemon with its default record_sync_runs = true."
            if mode == "worker":
                note += (" For information since issue 16: the round-robin relay queues "
                         "requests in each worker's socket, so its workers never wait for the "
                         "relay; the target is against the one-each relay (row below).")
            rows.append(pair_row(f"direct.{mode}.{suffix}", aggs["pns"], aggs["base"],
                                 base_label, target=target, note=note))
            if mode == "worker":
                rows += _worker_rows(suffix, aggs)
    rows += _process_mode(bench)
    rows += _stdio(bench, seq, par)
    for shape, suffix in ((seq, "seq"), (par, "32")):
        aggs = bench.interleave({"off": bench.zmq("pnsd_off", pts="echo", **shape),
                                 "on": bench.zmq("pnsd_on", pts="echo", **shape)})
        rows.append(pair_row(f"direct.record.{suffix}", aggs["on"], aggs["off"],
                             "same daemon, record_sync_runs = false",
                             target=Target(">=", 0.7, source="issue 4"),
                             note="Two daemons differing only in record_sync_runs, "
                                  "trials interleaved."))
    return rows


def _worker_rows(suffix: str, aggs: dict[str, Agg]) -> list[Row]:
    rows = [pair_row(
        f"direct.worker.{suffix}.one", aggs["pns"], aggs["one"],
        "bare 2-hop relay, 2 echo workers, one request per worker at a time",
        target=Target(">=", 0.5, source="issue 16"),
        note="The relay follows PNS's own rule: each worker has one request at a time, the "
             "rest wait in the relay's line for a free worker (so a long request never holds "
             "a short one back).")]
    if "prefetch" in aggs:
        rows.append(pair_row(
            "direct.worker.32.prefetch", aggs["prefetch"], aggs["base"],
            "bare 2-hop relay, 2 echo workers (round-robin)",
            note="For information: echo-worker with prefetch = 4 (each worker holds up to 4 "
                 "tasks queued behind the one it runs, as the round-robin relay's sockets "
                 "do), trading head-of-line blocking for no round trip between tasks."))
    return rows


def _process_mode(bench: Bench) -> list[Row]:
    work = bench.stack.tmp / "floor"
    work.mkdir(exist_ok=True)
    seconds = max(bench.plan.seconds, 0.4 if bench.plan.quick else 1.5)
    hello = {"kind": "zmq_seq", "input": {"infile": "stranger"}, "call_timeout": 15.0,
             "seconds": seconds, "warmup": 3}
    aggs = bench.interleave({
        "floor": {"kind": "spawn_floor", "script": str(RUN_PTS), "workdir": str(work),
                  "count": bench.plan.max_count, "seconds": seconds,
                  "warmup_seconds": bench.plan.warmup},
        "hello": bench.zmq("pnsd_on", pts="hello", **hello),
        "worker": bench.zmq("pnsd_on", pts="hello-worker", kind="zmq_seq",
                            input={"name": "stranger"}, seconds=seconds),
    })
    burst = Agg()
    bench.trial(bench.zmq("pnsd_on", pts="hello", kind="zmq_async", inflight=32,
                          input={"infile": "stranger"}, call_timeout=15.0, warmup=0,
                          seconds=min(seconds, 0.5)), burst)
    ok, busy = burst.total("ok"), burst.total("busy")
    note = (f"Sequential only: hello has queue = 0 (the reference's busy rule), so with 32 in "
            f"flight one run proceeds and the rest are refused at once — a 32-in-flight burst "
            f"got {ok} ok and {busy} busy, {burst.total('errors')} other errors. Baseline: "
            f"the same runPTS run by the load process itself (mkdir input/output, write "
            f"infile, bash, read outfile) with no server.")
    return [
        pair_row("direct.process.seq", aggs["hello"], aggs["floor"],
                 "runPTS spawned per request, no server", note=note),
        pair_row("direct.hello.ratio", aggs["worker"], aggs["hello"],
                 "hello in process mode (row above)",
                 note="Same greeting; worker mode keeps 2 Python workers warm. For "
                      "information: issue 16 dropped the > 20x target."),
    ]
