"""Fault 6: 1,000 malformed, truncated, unsigned, replayed and oversized protocol messages.

A raw DEALER socket sends messages built with :class:`protocols.codec.Codec` and then broken
(bad frames, cut headers and bodies, missing or wrong signatures, stale and replayed ids, a
version from the future, bodies over the size limit, unknown operations, wrong fields) while a
well-behaved client keeps running ``echo``. Every request the daemon reads must be answered
with an ``error`` of the expected code; a message refused at the front door whose header can be
read is answered with its code within the refusal budget (SPEC.md, "Refusals": at most
ANSWER_RATE a second after a burst of ANSWER_BURST), or not at all; the others must be dropped.
The daemon must survive and the good client must see zero failures. Messages over the hard
frame cap cost the sender its connection, so they go on throwaway sockets.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq
import zmq.asyncio

from faults.procs import Node
from faults.report import Row
from faults.runner import Context
from pnsd.refusals import ANSWER_BURST, ANSWER_RATE
from protocols.codec import Codec, new_message_id, read_refusal
from protocols.errors import ErrorCode, PnsError, RemoteError
from protocols.signing import Signer
from protocols.version import MAGIC

LIMIT = 1 << 20          # the daemon's max_message_bytes for this fault
# The codes of the front door's refusals: answered within the budget, or not at all.
REFUSALS = frozenset([ErrorCode.MALFORMED, ErrorCode.VERSION, ErrorCode.AUTH,
                      ErrorCode.REPLAY, ErrorCode.TOO_LARGE])
REPLY_WAIT = 15.0        # seconds to wait for the last answers


@dataclass
class Bad:
    kind: str
    frames: list[bytes]
    expect: str | None       # the error code expected, None: dropped; "ok": a normal reply
    msg_id: str | None = None
    hard: bool = False       # over the hard cap: a throwaway socket


class Forge:
    """Builds valid messages with a Codec, then breaks them one way or another."""

    def __init__(self, key: bytes) -> None:
        self.codec = Codec(key)
        self.signer = Signer(key)
        self.rng = random.Random(7)

    def valid(self, msg_type: str = "ping.req", body: Any = None,
              **kw: Any) -> tuple[str, list[bytes]]:
        msg_id = new_message_id()
        return msg_id, self.codec.encode(msg_type, {} if body is None else body,
                                         msg_id=msg_id, **kw)

    def signed(self, header: list[Any], body: bytes, *blobs: bytes) -> list[bytes]:
        packed = msgpack.packb(header, use_bin_type=True)
        payload = [MAGIC, packed, body, *blobs]
        return [MAGIC, self.signer.sign(payload), packed, body, *blobs]

    def noise(self, size: int) -> bytes:
        return self.rng.randbytes(size)

    # Each maker returns one Bad message.
    def garbage(self) -> Bad:
        count = self.rng.randint(1, 6)
        return Bad("random frames", [self.noise(self.rng.randint(0, 64)) for _ in range(count)],
                   None)

    def bad_magic(self) -> Bad:
        _, frames = self.valid()
        return Bad("bad marker", [b"PNX", *frames[1:]], None)

    def too_few(self) -> Bad:
        _, frames = self.valid()
        return Bad("missing body frame", frames[:3], None)

    def header_noise(self) -> Bad:
        _, frames = self.valid()
        return Bad("header not msgpack", [frames[0], frames[1], b"\xc1" + self.noise(20),
                                          frames[3]], None)

    def header_cut(self) -> Bad:
        _, frames = self.valid()
        return Bad("truncated header", [frames[0], frames[1], frames[2][:-9], frames[3]], None)

    def header_shape(self) -> Bad:
        header = [1, new_message_id(), "ping.req"]
        return Bad("header of 3 fields", self.signed(header, msgpack.packb({})), None)

    def header_id(self) -> Bad:
        header = [1, "x" * 200, "ping.req", None, time.time()]
        return Bad("header id of 200 chars", self.signed(header, msgpack.packb({})), None)

    def header_type(self) -> Bad:
        header = [1, new_message_id(), 5, None, time.time()]
        return Bad("header type not a string", self.signed(header, msgpack.packb({})), None)

    def body_cut(self) -> Bad:
        msg_id, frames = self.valid("run.req", {"pts": "echo", "input": "x" * 200})
        return Bad("truncated body (signature of the whole)",
                   [*frames[:3], frames[3][: len(frames[3]) // 2]], ErrorCode.AUTH, msg_id)

    def body_cut_signed(self) -> Bad:
        msg_id = new_message_id()
        body = msgpack.packb({"pts": "echo", "input": "x" * 200})
        frames = self.signed([1, msg_id, "run.req", None, time.time()], body[: len(body) // 2])
        return Bad("truncated body, re-signed", frames, ErrorCode.MALFORMED, msg_id)

    def unsigned(self) -> Bad:
        msg_id, frames = self.valid()
        return Bad("unsigned", [frames[0], b"", *frames[2:]], ErrorCode.AUTH, msg_id)

    def bad_signature(self) -> Bad:
        msg_id, frames = self.valid()
        sig = bytearray(frames[1])
        sig[self.rng.randrange(len(sig))] ^= 0x5A
        return Bad("flipped signature byte", [frames[0], bytes(sig), *frames[2:]],
                   ErrorCode.AUTH, msg_id)

    def wrong_key(self) -> Bad:
        msg_id = new_message_id()
        frames = Codec(os.urandom(32).hex().encode()).encode("ping.req", {}, msg_id=msg_id)
        return Bad("signed with another key", frames, ErrorCode.AUTH, msg_id)

    def stale(self) -> Bad:
        msg_id, frames = self.valid(ts=time.time() - 3600)
        return Bad("stale timestamp", frames, ErrorCode.REPLAY, msg_id)

    def future(self) -> Bad:
        msg_id, frames = self.valid(ts=time.time() + 3600)
        return Bad("timestamp from the future", frames, ErrorCode.REPLAY, msg_id)

    def version(self) -> Bad:
        msg_id = new_message_id()
        frames = self.signed([99, msg_id, "ping.req", None, time.time()], msgpack.packb({}))
        return Bad("protocol version 99", frames, ErrorCode.VERSION, msg_id)

    def oversized(self) -> Bad:
        msg_id, frames = self.valid("run.req", {"pts": "echo", "input": os.urandom(LIMIT + 4096)})
        return Bad("over the size limit", frames, ErrorCode.TOO_LARGE, msg_id)

    def oversized_hard(self) -> Bad:
        _, frames = self.valid("run.req", {"pts": "echo", "input": os.urandom(3 * LIMIT)})
        return Bad("over the hard frame cap", frames, None, hard=True)

    def unknown_op(self) -> Bad:
        msg_id, frames = self.valid("frobnicate.req")
        return Bad("unknown operation", frames, ErrorCode.UNKNOWN_OP, msg_id)

    def reply_type(self) -> Bad:
        msg_id, frames = self.valid(self.rng.choice(["ping.rep", "error", "job.event"]))
        return Bad("a reply type sent as a request", frames, ErrorCode.UNKNOWN_OP, msg_id)

    def bad_fields(self) -> Bad:
        body = self.rng.choice([
            {"pts": 5, "input": 1}, {"input": 1}, [1, 2, 3], None, "run", {"pts": ""},
            {"pts": "echo"}, {"pts": "echo", "input": 1, "timeout": -1},
            {"pts": "echo", "input": 1, "timeout": "soon"},
        ])
        msg_id, frames = self.valid("run.req", body)
        if body is None:   # valid() turns None into {}
            frames = self.signed([1, msg_id, "run.req", None, time.time()], msgpack.packb(None))
        return Bad("run with bad fields", frames, ErrorCode.BAD_REQUEST, msg_id)

    def bad_job_id(self) -> Bad:
        job = self.rng.choice(["../../etc/passwd", "%2e%2e", "", 12, None, "a" * 10_000])
        msg_id, frames = self.valid("job.result.req", {"job": job})
        return Bad("job id that is a path or not a string", frames, ErrorCode.BAD_REQUEST, msg_id)

    def unknown_pts(self) -> Bad:
        msg_id, frames = self.valid("run.req", {"pts": "../../bin/sh", "input": 1})
        return Bad("unknown PTS", frames, ErrorCode.NOT_FOUND, msg_id)

    def bad_ext(self) -> Bad:
        ext = self.rng.choice([msgpack.ExtType(1, b"\0\0\0\7"), msgpack.ExtType(9, b"x"),
                               msgpack.ExtType(1, b"\0")])
        msg_id = new_message_id()
        frames = self.signed([1, msg_id, "run.req", None, time.time()],
                             msgpack.packb({"pts": "echo", "input": ext}))
        return Bad("msgpack extension without its blob", frames, ErrorCode.MALFORMED, msg_id)

    def deep(self) -> Bad:
        msg_id = new_message_id()
        frames = self.signed([1, msg_id, "run.req", None, time.time()],
                             b"\x91" * 200_000 + b"\xc0")
        return Bad("body nested 200,000 deep", frames, ErrorCode.MALFORMED, msg_id)

    def replayed(self) -> list[Bad]:
        msg_id, frames = self.valid()
        return [Bad("original of a replay", frames, "ok", msg_id),
                Bad("replayed message", frames, ErrorCode.REPLAY, msg_id)]

    def body_noise(self) -> Bad:
        msg_id = new_message_id()
        frames = self.signed([1, msg_id, "run.req", None, time.time()], b"\xc1" + self.noise(40))
        return Bad("body not msgpack", frames, ErrorCode.MALFORMED, msg_id)


def plan(forge: Forge, count: int) -> list[Bad]:
    """``count`` bad messages, the kinds in turn; replays come in (original, copy) pairs."""
    makers: list[Callable[[], Bad | list[Bad]]] = [
        forge.garbage, forge.bad_magic, forge.too_few, forge.header_noise, forge.header_cut,
        forge.header_shape, forge.header_id, forge.header_type, forge.body_cut,
        forge.body_cut_signed, forge.unsigned, forge.bad_signature, forge.wrong_key,
        forge.stale, forge.future, forge.version, forge.unknown_op, forge.reply_type,
        forge.bad_fields, forge.bad_job_id, forge.unknown_pts, forge.bad_ext, forge.body_noise,
        forge.replayed,
    ]
    out: list[Bad] = []
    index = 0
    while len(out) < count:
        maker = makers[index % len(makers)]
        index += 1
        made = maker()
        out.extend(made if isinstance(made, list) else [made])
    # the expensive ones, a bounded few each
    for _ in range(max(2, count // 100)):
        out.append(forge.oversized())
        out.append(forge.deep())
    for _ in range(max(1, count // 200)):
        out.append(forge.oversized_hard())
    forge.rng.shuffle(out)
    return out


def protocol_garbage(ctx: Context) -> Row:
    row = Row("protocol", tries=1)
    node = Node(ctx.dir, "home", pnsd=f"max_message_bytes = {LIMIT}")
    try:
        node.start_daemon()
        count = ctx.pick(1000, 1000)
        asyncio.run(_attack(node, count, row))
        if node.daemon is None or not node.daemon.alive():
            row.fail("pnsd died during the garbage")
        elif not node.pingable():
            row.fail("pnsd no longer answers a ping after the garbage")
    finally:
        node.stop()
    return row


async def _attack(node: Node, count: int, row: Row) -> None:
    forge = Forge(node.key)
    bad = plan(forge, count)
    stop = asyncio.Event()
    good = asyncio.create_task(_good_client(node, stop, row))
    try:
        await _send_bad(node, forge, bad, row)
    finally:
        stop.set()
        sent, failures = await good
    row.sent += sent
    row.note(f"good client: {sent} echo runs alongside, {len(failures)} failed")
    for text in failures[:3]:
        row.fail(f"good client: {text}", count=0)
    row.failed += len(failures)


async def _send_bad(node: Node, forge: Forge, bad: list[Bad], row: Row) -> None:
    context = zmq.asyncio.Context()
    sock = _dealer(context, node.endpoint)
    pending: dict[str, list[Bad]] = {}
    answered: dict[str, list[tuple[str, str]]] = {}
    reader = asyncio.create_task(_read_replies(sock, forge.codec, answered))
    kinds: dict[str, int] = {}
    started = time.monotonic()
    try:
        for item in bad:
            kinds[item.kind] = kinds.get(item.kind, 0) + 1
            if item.hard:
                throwaway = _dealer(context, node.endpoint)
                await asyncio.wait_for(throwaway.send_multipart(item.frames), 10)
                await asyncio.sleep(0.05)   # let it reach the daemon before closing
                throwaway.close(linger=0)
            else:
                await asyncio.wait_for(sock.send_multipart(item.frames), 10)
            if item.msg_id is not None:
                pending.setdefault(item.msg_id, []).append(item)
            await asyncio.sleep(0)
        row.sent += len(bad)
        deadline = time.monotonic() + REPLY_WAIT
        while _missing(pending, answered):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)   # replies arrive on the reader task
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        sock.close(linger=0)
        context.term()
    _judge(pending, answered, row, time.monotonic() - started)
    row.expected = sum(len(items) for items in pending.values())
    row.note("kinds: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))


def _dealer(context: zmq.asyncio.Context, endpoint: str) -> zmq.asyncio.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    return sock


async def _read_replies(sock: zmq.asyncio.Socket, codec: Codec,
                        answered: dict[str, list[tuple[str, str]]]) -> None:
    while True:
        frames = await sock.recv_multipart()
        try:
            message = codec.decode(frames)
        except PnsError as exc:
            refusal = read_refusal(frames)      # refusals of unauthenticated messages: unsigned
            if refusal is None:
                answered.setdefault("<undecodable>", []).append(("?", str(exc)))
                continue
            message = refusal
        code = "ok" if message.type != "error" else RemoteError.from_body(message.body).code
        answered.setdefault(message.re or "<no re>", []).append((code, message.type))


def _missing(pending: dict[str, list[Bad]], answered: dict[str, list[tuple[str, str]]]) -> bool:
    """Some request the daemon must answer (not a refusal within the budget) is unanswered."""
    return any(len(answered.get(msg_id, [])) < sum(i.expect not in REFUSALS for i in items)
               for msg_id, items in pending.items())


def _judge(pending: dict[str, list[Bad]], answered: dict[str, list[tuple[str, str]]],
           row: Row, seconds: float) -> None:
    refusals = 0
    for msg_id, items in pending.items():
        got = sorted(code for code, _ in answered.get(msg_id, []))
        wanted = sorted(item.expect or "" for item in items)
        left, extra = list(wanted), []
        for code in got:
            if code in left:
                left.remove(code)
            else:
                extra.append(code)
        refusals += sum(code in REFUSALS for code in got)
        if extra or any(code not in REFUSALS for code in left):   # only refusals may be missing
            kind = items[-1].kind
            row.fail(f"{kind}: expected {wanted}, answered {got or 'nothing'}")
    budget = ANSWER_BURST + ANSWER_RATE * seconds
    row.note(f"refusals answered: {refusals} (budget {budget:.0f} in {seconds:.1f} s)")
    if refusals > budget + ANSWER_RATE:     # a second of slack for the clocks' offsets
        row.fail(f"{refusals} refusals answered, over the budget of {budget:.0f}", count=0)
    for key in ("<undecodable>", "<no re>"):
        if key in answered:
            row.fail(f"{len(answered[key])} replies {key}", count=len(answered[key]))
    stray = set(answered) - set(pending) - {"<undecodable>", "<no re>"}
    if stray:
        row.fail(f"{len(stray)} replies to messages that should have been dropped",
                 count=len(stray))


async def _good_client(node: Node, stop: asyncio.Event, row: Row) -> tuple[int, list[str]]:
    sent = 0
    failures: list[str] = []
    async with node.async_client(timeout=20.0) as client:

        async def one_loop() -> None:
            nonlocal sent
            while not stop.is_set():
                value = {"n": sent, "blob": os.urandom(64)}
                sent += 1
                try:
                    reply = await client.call("run", {"pts": "echo", "input": value})
                    if reply["result"] != value:
                        failures.append("echo returned something else")
                except PnsError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(one_loop() for _ in range(4)))
    return sent, failures
