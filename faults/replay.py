"""Fault 10: captured good requests replayed within and after the acceptance window.

The daemon runs with a short acceptance window (WINDOW seconds of clock skew). A raw DEALER
sends ``submit`` requests stamped almost a window ahead (the most an attacker can stretch a
capture) and replays each copy at once, then again when it is older than one window but its
timestamp is still fresh (the case that once went through), and again once it is stale. Every
replay must be refused (``replay``), and each original must have made exactly one job: a
replay that was accepted is a duplicate job (counted as lost). Messages stamped beyond the
skew and messages stamped NaN or ±infinity must be refused too (counted in the daemon's
refusals: a header that does not read is not answered).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import zmq
import zmq.asyncio

from faults.procs import Node
from faults.report import Row
from faults.runner import Context
from protocols.codec import Codec, read_refusal
from protocols.errors import ErrorCode, PnsError

WINDOW = 2.0          # the daemon's max_clock_skew for this fault
AHEAD = 0.95 * WINDOW   # how far ahead the captured requests are stamped
ANSWER_WAIT = 5.0


class Replayer:
    """A raw DEALER that sends frames and collects the answers by the id they answer."""

    def __init__(self, node: Node) -> None:
        self.codec = Codec(node.key, guard_replay=False)
        self.context = zmq.asyncio.Context()
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(node.endpoint)
        self.answers: dict[str, list[Any]] = {}
        self.tally: dict[str, tuple[int, int]] = {}   # phase -> (refused, sent)

    async def exchange(self, frames: list[bytes], msg_id: str) -> Any:
        """Send one message; its answer (a reply body or an error code), None if none came."""
        seen = len(self.answers.get(msg_id, []))
        await self.sock.send_multipart(frames)
        deadline = time.monotonic() + ANSWER_WAIT
        while len(self.answers.get(msg_id, [])) <= seen:
            if time.monotonic() > deadline:
                return None
            if await self.sock.poll(100):
                self._read(await self.sock.recv_multipart())
        return self.answers[msg_id][seen]

    def _read(self, frames: list[bytes]) -> None:
        try:
            message = self.codec.decode(frames)
        except PnsError:
            message = read_refusal(frames)
            if message is None:
                return
        answer = message.body.get("code") if message.type == "error" else message.body
        self.answers.setdefault(message.re or "", []).append(answer)

    def close(self) -> None:
        self.sock.close(linger=0)
        self.context.term()


def replay(ctx: Context) -> Row:
    row = Row("replay", tries=1)
    node = Node(ctx.dir, "home", pnsd=f"max_clock_skew = {WINDOW}")
    try:
        node.start_daemon()
        asyncio.run(_attack(node, ctx.pick(20, 8), row))
        if node.daemon is None or not node.daemon.alive():
            row.fail("pnsd died during the replays")
    finally:
        node.stop()
    return row


async def _attack(node: Node, count: int, row: Row) -> None:
    replayer = Replayer(node)
    codec = Codec(node.key)
    stop = asyncio.Event()
    traffic = asyncio.create_task(_keep_pinging(node, stop, row))   # a daemon in use
    try:
        before = await _refused(node)
        captured: list[tuple[float, str, list[bytes]]] = []
        for n in range(count):      # spread over one window: every phase of the id memory
            msg_id = f"replay-{n}-{time.time_ns()}"
            frames = codec.encode("submit.req", {"pts": "echo", "input": {"n": n}},
                                  msg_id=msg_id, ts=time.time() + AHEAD)
            answer = await replayer.exchange(frames, msg_id)
            captured.append((time.monotonic(), msg_id, frames))
            if not (isinstance(answer, dict) and "job" in answer):
                row.fail(f"original submit {n} not accepted: {answer}")
            row.sent += 1
            await _replay(replayer, [captured[-1]], row, "at once")
            await asyncio.sleep(WINDOW / count)
        for item in captured:       # each just before its stamp is stale: the id must be kept
            await asyncio.sleep(max(0.0, item[0] + WINDOW + AHEAD - 0.25 - time.monotonic()))
            await _replay(replayer, [item], row, "after a window, stamp still fresh")
        await asyncio.sleep(max(0.0, captured[-1][0] + WINDOW + AHEAD + 0.5 - time.monotonic()))
        await _replay(replayer, captured, row, "once stale")
        await _out_of_window(node, replayer, codec, row, before)
        await _count_jobs(node, count, row)
    finally:
        stop.set()
        await traffic
        replayer.close()
    for when, (refused, total) in replayer.tally.items():
        row.note(f"replays {when}: {refused} of {total} refused")


async def _keep_pinging(node: Node, stop: asyncio.Event, row: Row) -> None:
    async with node.async_client(timeout=30.0) as client:
        while not stop.is_set():
            try:
                await client.call("ping", {})
            except PnsError as exc:
                row.fail(f"good client: {type(exc).__name__}: {exc}")
            row.sent += 1
            await asyncio.sleep(0.05)   # a steady trickle of good traffic, not a load


async def _replay(replayer: Replayer, items: list[tuple[float, str, list[bytes]]], row: Row,
                  when: str) -> None:
    refused, total = replayer.tally.get(when, (0, 0))
    for _, msg_id, frames in items:
        answer = await replayer.exchange(frames, msg_id)
        row.sent += 1
        row.expected += 1
        total += 1
        if answer == ErrorCode.REPLAY:
            refused += 1
        else:
            row.fail(f"a replay {when} was answered {str(answer)[:80]}")
    replayer.tally[when] = (refused, total)


async def _out_of_window(node: Node, replayer: Replayer, codec: Codec, row: Row,
                         before: dict[str, int]) -> None:
    """Stamped beyond the skew (answered ``replay``) and NaN/±inf (refused unanswered)."""
    ahead = codec.encode("ping.req", {}, msg_id="ahead", ts=time.time() + WINDOW * 1.5)
    answer = await replayer.exchange(ahead, "ahead")
    if answer != ErrorCode.REPLAY:
        row.fail(f"a message stamped {WINDOW * 1.5:g} s ahead was answered {answer}")
    for ts in (float("nan"), float("inf"), float("-inf")):
        await replayer.sock.send_multipart(codec.encode("ping.req", {}, ts=ts))
    row.sent += 4
    row.expected += 4
    deadline = time.monotonic() + ANSWER_WAIT
    while True:
        malformed = (await _refused(node)).get("malformed", 0) - before.get("malformed", 0)
        if malformed >= 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)   # polling another process's counters
    if malformed != 3:
        row.fail(f"timestamps NaN, inf, -inf: {malformed} of 3 refused", count=3 - malformed)
    row.note(f"stamped {WINDOW * 1.5:g} s ahead: {answer}; NaN, inf, -inf: {malformed} refused")


async def _refused(node: Node) -> dict[str, int]:
    async with node.async_client(timeout=30.0) as client:
        status = await client.call("status", {})
    return dict((status.get("refusals") or {}).get("refused") or {})


async def _count_jobs(node: Node, count: int, row: Row) -> None:
    async with node.async_client(timeout=30.0) as client:
        total = (await client.call("job.list", {"pts": "echo", "limit": 1}))["total"]
    if total != count:
        row.lose(f"{total} jobs for {count} submits: replays made duplicates",
                 count=abs(total - count))
    row.note(f"{count} submits stamped {AHEAD:g} s ahead, each replayed 3 times: {total} jobs")
