"""The daemon's front door: handlers answered within their call or awaited, errors as replies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from structlog.testing import capture_logs

from pnsd.errors import NotFound
from pnsd.refusals import ANSWER_BURST, Refusals
from pnsd.server import Server
from protocols.client import AsyncClient, Client
from protocols.codec import Codec, read_refusal
from protocols.errors import ErrorCode, RemoteError, Unauthenticated
from protocols.version import MAGIC

KEY = b"k" * 32


async def now(body: Any) -> Any:
    return {"echo": body}


async def later(body: Any) -> Any:
    await asyncio.sleep(0)
    return {"later": body}


async def missing(body: Any) -> Any:
    raise NotFound("no such thing")


async def buggy(body: Any) -> Any:
    raise ZeroDivisionError("a bug")


async def buggy_later(body: Any) -> Any:
    raise KeyError("a bug")


async def counting(body: Any) -> AsyncIterator[Any]:
    for n in range(3):
        yield {"n": n}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    context: zmq.Context[Any] = zmq.Context()
    endpoint = f"ipc://{tmp_path}/server.sock"
    server = Server(context, Codec(KEY), endpoints=[endpoint], streams={"count": counting},
                    handlers={"now": now, "later": later, "missing": missing, "buggy": buggy,
                              "buggy_later": buggy_later})
    server.bind()
    serving = asyncio.create_task(server.serve())
    try:
        yield server, endpoint
    finally:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await server.drain(1)
        server.close()
        context.term()


@pytest.fixture
async def client(served: tuple[Server, str]) -> AsyncIterator[AsyncClient]:
    caller = AsyncClient(served[1], key=KEY, timeout=10)
    try:
        yield caller
    finally:
        await caller.close()


async def test_handlers_answered_within_their_call_and_awaited_ones_both_reply(
    client: AsyncClient,
) -> None:
    replies = await asyncio.gather(*(client.call(op, n) for n in range(5)
                                     for op in ("now", "later")))
    assert replies == [reply for n in range(5) for reply in ({"echo": n}, {"later": n})]


async def test_errors_raised_within_the_call_or_later_become_error_replies(
    client: AsyncClient,
) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.call("missing")
    assert caught.value.code == "not_found" and "no such thing" in caught.value.message
    for op in ("buggy", "buggy_later"):
        with pytest.raises(RemoteError) as caught:
            await client.call(op)
        assert caught.value.code == "internal" and "bug" not in caught.value.message
    assert await client.call("now", 1) == {"echo": 1}     # the server carries on


async def test_streams_and_unknown_operations(client: AsyncClient) -> None:
    assert [event async for event in client.stream("count")] == [{"n": n} for n in range(3)]
    with pytest.raises(RemoteError) as caught:
        await client.call("nonsense")
    assert caught.value.code == "unknown_op"


@pytest.mark.parametrize("key", [b"w" * 32, b""], ids=["another key", "no key"])
async def test_a_client_whose_signature_is_refused_is_told_so_at_once(
        served: tuple[Server, str], key: bytes) -> None:
    server, endpoint = served
    async with AsyncClient(endpoint, key=key, timeout=60) as wrong:
        with pytest.raises(Unauthenticated) as caught:
            await wrong.call("now", 1)
    assert caught.value.code == ErrorCode.AUTH and "key" in caught.value.message
    with Client(endpoint, key=key, timeout=60) as blocking, pytest.raises(Unauthenticated):
        await asyncio.to_thread(blocking.call, "now", 1)
    assert server.refusals.counts[ErrorCode.AUTH] == 2


def forged(count: int) -> list[list[bytes]]:
    """``count`` messages: unsigned, signed with another key, and garbage, in turn."""
    out = []
    for n in range(count):
        if n % 3 == 0:
            out.append([MAGIC, b"", *Codec(b"").encode("now.req", n)[2:]])
        elif n % 3 == 1:
            out.append(Codec(b"x" * 32).encode("now.req", n))
        else:
            out.append([b"garbage", bytes([n % 256])])
    return out


async def test_a_flood_of_forged_messages_is_counted_but_logged_and_answered_within_budgets(
        served: tuple[Server, str], client: AsyncClient) -> None:
    server, endpoint = served
    server.refusals = Refusals(clock=lambda: 0.0)       # time stands still: only the burst
    context: zmq.Context[Any] = zmq.Context()
    flooder = context.socket(zmq.DEALER)
    flooder.setsockopt(zmq.SNDHWM, 0)
    flooder.connect(endpoint)
    try:
        with capture_logs() as logs:
            for frames in forged(3000):
                flooder.send_multipart(frames)
            assert await client.call("now", "good") == {"echo": "good"}
            marker = Codec(KEY).encode("now.req", "marker")   # answered after the refusals
            flooder.send_multipart(marker)
            answers = await asyncio.to_thread(read_until_reply, flooder)
    finally:
        flooder.close(linger=0)
        context.term()
    assert sum(server.refusals.counts.values()) == 3000
    assert server.refusals.counts == {ErrorCode.AUTH: 2000, ErrorCode.MALFORMED: 1000}
    assert len(answers) == ANSWER_BURST
    assert 2000 - ANSWER_BURST <= server.refusals.unanswered <= 3000 - ANSWER_BURST
    assert all(len(b"".join(a)) < 300 and a[1] == b"" for a in answers)   # compact, unsigned
    assert {read_refusal(a).body["code"] for a in answers} == {"auth"}   # type: ignore[union-attr]
    refused = [entry for entry in logs if entry["event"] == "message_refused"]
    assert len(refused) == 2                          # one per reason per second


def read_until_reply(socket: zmq.Socket[bytes]) -> list[list[bytes]]:
    """The refusal answers that arrive before the marker's reply."""
    answers: list[list[bytes]] = []
    while socket.poll(10_000):
        frames = socket.recv_multipart()
        if Codec(b"").decode(frames).type == "now.rep":
            return answers
        answers.append(frames)
    raise AssertionError("no reply to the marker")


async def test_refusals_of_authenticated_messages_are_answered_signed(
        served: tuple[Server, str], client: AsyncClient) -> None:
    server, endpoint = served
    context: zmq.Context[Any] = zmq.Context()
    socket = context.socket(zmq.DEALER)
    socket.connect(endpoint)
    frames = Codec(KEY).encode("now.req", 1)
    try:
        socket.send_multipart(frames)
        socket.send_multipart(frames)     # a replay
        replies = [await asyncio.to_thread(socket.recv_multipart) for _ in range(2)]
    finally:
        socket.close(linger=0)
        context.term()
    decoded = [Codec(KEY, guard_replay=False).decode(reply) for reply in replies]
    decoded.sort(key=lambda m: m.type)           # replies come back in any order (SPEC.md)
    assert [m.type for m in decoded] == ["error", "now.rep"]
    assert decoded[0].body["code"] == ErrorCode.REPLAY
    assert server.refusals.counts == {ErrorCode.REPLAY: 1}


def _server(context: zmq.Context[Any], endpoint: str) -> Server:
    server = Server(context, Codec(KEY), endpoints=[endpoint], streams={}, handlers={"now": now})
    server.bind()
    return server


async def _stop(server: Server, serving: asyncio.Task[None]) -> None:
    serving.cancel()
    await asyncio.gather(serving, return_exceptions=True)
    await server.drain(1)
    server.close()


@pytest.mark.parametrize("flavour", ["async, never used before", "blocking, used before"])
async def test_a_client_idle_while_the_daemon_restarts_is_answered_by_the_new_one(
        tmp_path: Path, flavour: str) -> None:
    """The drop the client's monitor saw while nothing waited must not fail its next call.

    The DISCONNECTED event of the first daemon's going sits unread in the monitor of a client
    with no call in flight; read as the next call waits, it used to fail that call with
    "connection lost", although the call went to the new daemon and was answered.
    """
    context: zmq.Context[Any] = zmq.Context()
    endpoint = f"ipc://{tmp_path}/server.sock"
    first = _server(context, endpoint)
    serving = asyncio.create_task(first.serve())
    blocking = flavour.startswith("blocking")
    caller: AsyncClient | Client = (Client if blocking else AsyncClient)(
        endpoint, key=KEY, timeout=10)
    try:
        # Connected (with ZMQ_IMMEDIATE the socket is writable only then), so that the first
        # daemon's going is a drop the client's monitor reports.
        assert await asyncio.to_thread(caller._socket.poll, 10_000, zmq.POLLOUT)
        if isinstance(caller, Client):
            assert await asyncio.to_thread(caller.call, "now", 0) == {"echo": 0}
        await _stop(first, serving)
        # Wait until the client's monitor holds the drop (unread): a call sent before the
        # client noticed would go down the dying connection and rightly be reported lost.
        assert await asyncio.to_thread(caller._monitor.poll, 10_000), "no drop reported"
        second = _server(context, endpoint)
        serving = asyncio.create_task(second.serve())
        try:
            # Each call waits for the new connection: the socket queues nothing for an absent
            # peer.
            for n in (1, 2):
                if isinstance(caller, Client):
                    reply = await asyncio.to_thread(caller.call, "now", n)
                else:
                    reply = await caller.call("now", n)
                assert reply == {"echo": n}
        finally:
            await _stop(second, serving)
    finally:
        if isinstance(caller, Client):
            caller.close()
        else:
            await caller.close()
        context.term()


def test_the_monitor_is_read_to_its_last_event_only_when_one_waits(tmp_path: Path) -> None:
    context: zmq.Context[Any] = zmq.Context()
    endpoint = f"ipc://{tmp_path}/server.sock"
    router = context.socket(zmq.ROUTER)
    router.bind(endpoint)
    caller = Client(endpoint, key=KEY, timeout=10)
    seen: list[list[bytes]] = []
    try:
        assert caller._socket.poll(10_000, zmq.POLLOUT)      # connected
        caller._read_events(seen.append)
        assert seen == []
        router.close(linger=0)
        assert caller._monitor.poll(10_000), "no drop reported"
        caller._read_events(seen.append)
        caller._read_events(seen.append)
        assert len(seen) == 1 and caller._lost(seen[0]) is not None
    finally:
        caller.close()
        router.close(linger=0)
        context.term()


async def test_a_stopped_server_answers_new_requests_not_run_and_those_in_flight(
        tmp_path: Path) -> None:
    """Once serve ends (the daemon stops): a new request is answered ``stopping`` and never
    reaches its handler, one in flight gets its reply, and one the drain gives up on is
    answered as cut short, in time to leave before the socket closes."""
    context: zmq.Context[Any] = zmq.Context()
    endpoint = f"ipc://{tmp_path}/server.sock"
    gate, started = asyncio.Event(), {"held": asyncio.Event(), "stuck": asyncio.Event()}
    reached: list[Any] = []

    async def held(body: Any) -> Any:
        started["held"].set()
        await gate.wait()
        return {"held": body}

    async def stuck(body: Any) -> Any:
        started["stuck"].set()
        await asyncio.Event().wait()     # never ends: the drain gives up on it

    async def noted(body: Any) -> Any:
        reached.append(body)
        return {}

    server = Server(context, Codec(KEY), endpoints=[endpoint], streams={},
                    handlers={"held": held, "stuck": stuck, "noted": noted})
    server.bind()
    serving = asyncio.create_task(server.serve())
    caller = AsyncClient(endpoint, key=KEY, timeout=10)
    try:
        in_flight = asyncio.create_task(caller.call("held", 1))
        cut = asyncio.create_task(caller.call("stuck", 2))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started.values())), 10)
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)

        with pytest.raises(RemoteError) as refused:
            await caller.call("noted", 3)
        assert refused.value.code == ErrorCode.UNAVAILABLE
        assert refused.value.details == {"stopping": True}
        assert reached == []                      # not run

        gate.set()
        assert await in_flight == {"held": 1}
        await server.drain(0.05)                  # "stuck" never ends: cancelled
        server.close()
        with pytest.raises(RemoteError) as cut_short:
            await asyncio.wait_for(cut, 10)
        assert cut_short.value.code == ErrorCode.UNAVAILABLE
        assert "may or may not have run" in cut_short.value.message
        assert cut_short.value.details == {}
    finally:
        await caller.close()
        context.term()
