"""protocols.pump: whole messages both ways through the compiled send and receive, big frames
kept as views, and no message stranded when a send consumes the socket's readability edge."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from protocols.pump import BATCH, Pump, recv_frames, send_frames

WAIT = 10.0


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[zmq.Socket[Any], zmq.Socket[Any]]]:
    """A ROUTER (the pump's side) and a DEALER connected to it over ipc."""
    context = zmq.Context()
    router, dealer = context.socket(zmq.ROUTER), context.socket(zmq.DEALER)
    endpoint = f"ipc://{tmp_path}/pump.sock"
    router.bind(endpoint)
    dealer.connect(endpoint)
    try:
        yield router, dealer
    finally:
        router.close(linger=0)
        dealer.close(linger=0)
        context.term()


def test_send_and_recv_frames_keep_the_message_whole(pair: Any) -> None:
    router, dealer = pair
    big = bytes(range(256)) * 512       # 128 KiB: sent without a copy, received as a view
    send_frames(dealer, [b"a", b"", big])
    assert router.poll(int(WAIT * 1000))
    frames = recv_frames(router)
    assert [type(f) for f in frames] == [bytes, bytes, bytes, memoryview]
    assert frames[1:3] == [b"a", b""] and bytes(frames[3]) == big
    with pytest.raises(zmq.Again):
        recv_frames(router)


async def test_pump_replies_from_its_receiver(pair: Any) -> None:
    """An echo server on a pump answers every request, each sent from inside its receiver."""
    router, dealer = pair

    def echo(frames: list[Any]) -> None:
        pump.send(frames)

    def collect(count: int) -> list[list[Any]]:
        replies: list[list[Any]] = []
        while len(replies) < count and dealer.poll(int(WAIT * 1000)):
            replies.append(recv_frames(dealer))
        return replies

    pump = Pump(router, echo)
    try:
        count = 3 * BATCH        # more than one drain's batch
        sent = [[b"%d" % index, b"x" * (index % 7)] for index in range(count)]
        for frames in sent:
            send_frames(dealer, frames)
        replies = await asyncio.wait_for(asyncio.to_thread(collect, count), WAIT * 2)
    finally:
        pump.close()
    assert replies == sent and pump.closed


async def test_a_send_that_takes_the_edge_still_drains(pair: Any) -> None:
    """Messages that arrive before the pump sends are received although the send consumed the
    descriptor's edge (they are drained on the next turn, not inside the send)."""
    router, dealer = pair
    got: list[list[Any]] = []
    first, arrived = asyncio.Event(), asyncio.Event()

    def receive(frames: list[Any]) -> None:
        got.append(frames)
        first.set()
        if len(got) == 3:
            arrived.set()

    pump = Pump(router, receive)
    try:
        send_frames(dealer, [b"first"])
        async with asyncio.timeout(WAIT):
            await first.wait()
            identity = got[0][0]
            send_frames(dealer, [b"second"])
            send_frames(dealer, [b"third"])
            assert router.poll(int(WAIT * 1000))   # queued before the send below
            pump.send([identity, b"reply"])
            await arrived.wait()
        assert [f[1:] for f in got] == [[b"first"], [b"second"], [b"third"]]
        assert dealer.poll(int(WAIT * 1000)) and recv_frames(dealer) == [b"reply"]
    finally:
        pump.close()
