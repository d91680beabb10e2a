"""The daemon's front door: handlers answered within their call or awaited, errors as replies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from pnsd.errors import NotFound
from pnsd.server import Server
from protocols.client import AsyncClient
from protocols.codec import Codec
from protocols.errors import RemoteError

KEY = b"k" * 32


def now(body: Any) -> Any:
    return {"echo": body}


async def later(body: Any) -> Any:
    await asyncio.sleep(0)
    return {"later": body}


def missing(body: Any) -> Any:
    raise NotFound("no such thing")


def buggy(body: Any) -> Any:
    raise ZeroDivisionError("a bug")


async def buggy_later(body: Any) -> Any:
    raise KeyError("a bug")


async def counting(body: Any) -> AsyncIterator[Any]:
    for n in range(3):
        yield {"n": n}


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[AsyncClient]:
    context: zmq.Context[Any] = zmq.Context()
    endpoint = f"ipc://{tmp_path}/server.sock"
    server = Server(context, Codec(KEY), endpoints=[endpoint], streams={"count": counting},
                    handlers={"now": now, "later": later, "missing": missing, "buggy": buggy,
                              "buggy_later": buggy_later})
    server.bind()
    serving = asyncio.create_task(server.serve())
    caller = AsyncClient(endpoint, key=KEY, timeout=10)
    try:
        yield caller
    finally:
        await caller.close()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        await server.drain(1)
        server.close()
        context.term()


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
