"""Size limits across the client <-> daemon hop: checked before every send, never a dead link.

A daemon with a 1 MiB message limit and a process-mode PTS that writes three files of 600 kB
each: its result (1.8 MB) is over the limit, is recorded, and is read in chunks; requests over
the limit are refused before they are sent; a connection the daemon's socket drops is noticed,
fails its calls at once and works again afterwards.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocols.calls import AsyncCalls
from protocols.client import AsyncClient, Client
from protocols.errors import ErrorCode, RemoteError
from protocols.streamclient import StreamClient, stream_door
from tests.integration.conftest import Running, running_daemon, settings_for

pytestmark = pytest.mark.slow

LIMIT = 1 << 20
FILE_BYTES = 600_000
BIG_PTS = f"""max_message_bytes = {LIMIT}
[pts.big]
mode = "process"
dir = "bigpts"
run = ["runbig"]
outputs = ["a", "b", "c"]
"""
SCRIPT = """#!/bin/sh
for name in a b c; do head -c {size} /dev/urandom > output/$name; done
"""


def big_home(home: Path) -> Path:
    script = home / "bigpts" / "runbig"
    script.parent.mkdir(parents=True)
    script.write_text(SCRIPT.format(size=FILE_BYTES))
    script.chmod(0o755)
    return home


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    home = big_home(tmp_path / "home")
    async with running_daemon(settings_for(home, BIG_PTS)) as running:
        yield running


@pytest.fixture(params=["router", "stream"])
def door(request: pytest.FixtureRequest) -> str:
    """Which of the daemon's doors the asyncio client comes in by: the ZeroMQ ROUTER, or the
    stream door pnsweb uses (the same promises hold on both)."""
    return str(request.param)


def client_of(node: Running, door: str, *, max_bytes: int = LIMIT,
              timeout: float = 30.0) -> AsyncCalls:
    if door == "stream":
        return StreamClient(stream_door(node.settings.endpoint), key=node.key,
                            max_bytes=max_bytes, timeout=timeout)
    return AsyncClient(node.settings.endpoint, key=node.key, max_bytes=max_bytes,
                       timeout=timeout)


async def test_a_run_whose_result_is_over_the_limit_is_recorded_and_read_in_chunks(
    node: Running, door: str,
) -> None:
    async with client_of(node, door) as client:
        with pytest.raises(RemoteError) as caught:
            await client.call("run", {"pts": "big", "input": {}})
        assert caught.value.code == ErrorCode.TOO_LARGE
        job = caught.value.details["job"]
        assert caught.value.details["size"] > LIMIT
        # job.result answers at once, without reading the result, and says where it is
        with pytest.raises(RemoteError) as again:
            await client.call("job.result", {"job": job})
        assert again.value.code == ErrorCode.TOO_LARGE and "job.result_chunk" in again.value.message
        chunks = [chunk async for chunk in client.result_chunks(job, chunk=256 * 1024)]
        assert len(chunks) > 4 and max(map(len, chunks)) <= 256 * 1024
        whole = await client.result(job)
        outputs = whole["result"]["outputs"]
        assert {name: len(data) for name, data in outputs.items()} == dict.fromkeys(
            "abc", FILE_BYTES)
        assert whole["job"]["status"] == "successful"
        assert (await client.call("run", {"pts": "echo", "input": 1}))["result"] == 1


async def test_a_request_over_the_limit_is_refused_before_it_is_sent(
        node: Running, door: str) -> None:
    async with client_of(node, door) as client:
        started = time.monotonic()
        with pytest.raises(RemoteError) as caught:
            await client.call("run", {"pts": "echo", "input": [0.5] * (LIMIT // 8)})
        assert caught.value.code == ErrorCode.TOO_LARGE
        assert caught.value.details["limit"] == LIMIT
        assert time.monotonic() - started < 1.0
        assert (await client.call("run", {"pts": "echo", "input": 2}))["result"] == 2


async def test_a_dropped_connection_fails_its_calls_at_once_and_the_link_comes_back(
    node: Running, door: str,
) -> None:
    """A client allowed more than the daemon: the daemon drops the connection on an over-size
    message (its ROUTER's hard cap, or the stream door's record limit); the waiting call fails
    fast, the next one is served."""
    async with client_of(node, door, max_bytes=16 * LIMIT) as client:
        assert (await client.call("ping", {}))["protocol"] == 1
        dropped = getattr(client, "_socket", None)
        started = time.monotonic()
        slow = asyncio.ensure_future(client.call("run", {"pts": "sleep", "input": {"seconds": 3}}))
        with pytest.raises(RemoteError) as caught:
            await client.call("run", {"pts": "echo", "input": os.urandom(4 * LIMIT)})
        assert caught.value.code == ErrorCode.UNAVAILABLE
        with pytest.raises(RemoteError):
            await slow            # lost with the connection too: failed, not left hanging
        assert time.monotonic() - started < 10.0
        assert (await client.call("run", {"pts": "echo", "input": 3}))["result"] == 3
        if isinstance(client, AsyncClient):     # the next request went on a new socket
            assert client._socket is not dropped


async def test_the_blocking_client_notices_a_dropped_connection_and_reconnects(
    node: Running,
) -> None:
    def exchange() -> tuple[str, int]:
        with Client(node.settings.endpoint, key=node.key, max_bytes=16 * LIMIT,
                    timeout=30.0) as client:
            dropped = client._socket
            with pytest.raises(RemoteError) as caught:
                client.call("run", {"pts": "echo", "input": os.urandom(4 * LIMIT)})
            answer = client.call("run", {"pts": "echo", "input": 4})["result"]
            # not on the socket whose connection dropped: a request sent there before it took in
            # the drop would be queued on the dead connection and never answered
            assert client._socket is not dropped
            return caught.value.code, answer

    started = time.monotonic()
    assert await asyncio.to_thread(exchange) == (ErrorCode.UNAVAILABLE, 4)
    assert time.monotonic() - started < 10.0
