"""Remote workers: a run on a worker that joined over tcp:// with CURVE vs a local ipc:// one.

One daemon (``pnsd_remote``) serves two worker-mode echo PTS with one worker each: ``lecho``,
whose worker the daemon starts on its private ipc:// socket, and ``recho``, whose worker is a
``python -m protocols.worker --pts recho`` process started by the bench that joined over the
daemon's ``worker_endpoint`` on loopback with CURVE keys made by ``pnsd keys new``. The same
client load runs against both, trials interleaved.
"""

from __future__ import annotations

from bench.area_direct import LABELS, pair_row
from bench.measure import Bench
from bench.report import Row, Target

NEEDS = ("pnsd_remote",)
LABELS.update({
    "remote.worker.seq": "remote worker (tcp + CURVE) vs local (ipc), echo, sequential",
    "remote.worker.32": "remote worker (tcp + CURVE) vs local (ipc), echo, 32 in flight",
})


def run(bench: Bench) -> list[Row]:
    rows = []
    for shape, suffix, target in (
        ({"kind": "zmq_seq"}, "seq", Target(">=", 0.6, source="issue 17")),
        ({"kind": "zmq_async", "inflight": 32}, "32", None),
    ):
        aggs = bench.interleave({"local": bench.zmq("pnsd_remote", pts="lecho", **shape),
                                 "remote": bench.zmq("pnsd_remote", pts="recho", **shape)})
        rows.append(pair_row(
            f"remote.worker.{suffix}", aggs["remote"], aggs["local"],
            "same daemon, one local worker on ipc://", target=target,
            note="One worker each on the same daemon; the remote one joined over tcp:// on "
                 "loopback with CURVE (encryption and HMAC signing both on)."))
    return rows
