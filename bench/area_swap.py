"""Hot swap: the p99 of runs while the PTS is replaced, against steady state.

The swap goes through the daemon: ``pts.replace`` when the protocol has it (the full spec with
a new version), else ``pts.update`` (a changed ``timeout`` makes a new generation that is
started and swapped in), else the row says the API is not present. The load is ``echo-worker``
with 32 in flight, so every swap starts new worker processes while the old ones drain.
"""

from __future__ import annotations

from typing import Any

from bench.measure import Bench
from bench.report import Row
from protocols.messages import OPERATION_NAMES

NEEDS = ("pnsd_on",)
PTS = "echo-worker"
LABELS = {
    "swap.p99": "hot swap: p99 of runs during swaps vs steady",
    "swap.rate": "hot swap: throughput during swaps vs steady",
}


def swap_op() -> str | None:
    for op in ("pts.replace", "pts.update"):
        if op in OPERATION_NAMES:
            return op
    return None


def run(bench: Bench) -> list[Row]:
    op = swap_op()
    if op is None:
        return [Row("swap", key, f"{label} — not measured: hot swap API not present", "s")
                for key, label in LABELS.items()]
    spec: dict[str, Any] = {}
    if op == "pts.replace":
        from protocols.client import Client  # noqa: PLC0415

        service = bench.stack["pnsd_on"]
        with Client(service.endpoint, key=bytes.fromhex(service.key)) as client:
            spec = client.call("pts.describe", {"name": PTS})["spec"]
        spec = {k: v for k, v in spec.items() if v is not None and k != "name"}
    swaps = 1 if bench.plan.quick else 3
    gap = 0.1 if bench.plan.quick else 0.5
    common = {"kind": "zmq_async", "inflight": 32, "pts": PTS}
    aggs = bench.interleave({
        "steady": bench.zmq("pnsd_on", seconds=max(2 * bench.plan.seconds, 1.0), **common),
        "swap": bench.zmq("pnsd_on", **common | {"kind": "swap", "op": op, "swaps": swaps,
                                                  "gap": gap, "spec": spec, "seconds": 30.0}),
    })
    # new generations mean new worker pids: know them, to stop them at the end
    status = bench.stack.pnsd_status("pnsd_on")["pts"][PTS]
    bench.stack["pnsd_on"].child.extra_pids.update(int(p) for p in status.get("pids", []))
    swap, steady = aggs["swap"], aggs["steady"]
    swap_errors = swap.total("swap_errors")
    note = (f"Via `{op}`: per trial {swaps} swaps {gap} s apart, the load running from {gap} s "
            f"before the first to {gap} s after the last (median "
            f"{swap.median('elapsed') or 0:.1f} s); in all {swap.total('swaps')} swaps, "
            f"{swap_errors} swap errors, {swap.total('errors')} failed runs, "
            f"{swap.total('busy')} busy; a swap took {(swap.median('swap_p50') or 0) * 1e3:.0f} "
            f"ms (median). Lower ratio is better; 1.0 would be invisible swaps.")
    problem = swap.problems() or next((r["swap_error"] for r in swap.results
                                       if r.get("swap_error")), "")
    if problem:
        note += f" First error: {problem}"
    p99_swap, p99_steady = swap.lat[1], steady.lat[1]
    return [
        Row("swap", "swap.p99", LABELS["swap.p99"], "s", pns=p99_swap, base=p99_steady,
            base_label="p99 steady state, same load", lower_is_better=True, note=note,
            errors=swap.errors + swap_errors),
        Row("swap", "swap.rate", LABELS["swap.rate"], "/s", pns=swap.rate, base=steady.rate,
            base_label="steady state, same load"),
    ]
