"""A pnsd process stopped with SIGTERM answers every request it has read, on both doors.

Seams covered: the ZeroMQ ROUTER and the stream door while the daemon stops (a run in flight
gets its result, not "lost"; a request that arrives then is answered ``unavailable`` with
``details.stopping``, at once, and was not run; one still running when the drain gives up is
answered as cut short), the reply written just before the process exits (it must leave the
socket before the context is destroyed), and pnsweb's node pool reading the daemon's own answer
as "not run" (:func:`pnsweb.nodes.not_run`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pnsd.keyfile import load_or_create_key
from pnsd.server import CUT_SHORT, STOPPING
from pnsweb.nodes import not_run
from protocols.calls import AsyncCalls
from protocols.client import AsyncClient
from protocols.errors import ErrorCode, RemoteError
from protocols.streamclient import StreamClient, stream_door
from tests.integration.conftest import DaemonProcess, spawned_daemon
from tests.waiting import until

# No demo PTS (their worker pools make a start slow): sleep, inproc.
CONFIG = """demo = false
[pts.sleep]
mode = "inproc"
entry = "pnsd.demo:sleep"
concurrency = 8
timeout = 600
"""
STOP_TIMEOUT = 60.0     # the daemon's whole stop: the jobs' grace (10 s) and the drain (1 s)


@pytest.fixture
def process(tmp_path: Path) -> Iterator[DaemonProcess]:
    with spawned_daemon(tmp_path / "home", CONFIG) as running:
        yield running


@contextlib.asynccontextmanager
async def door_client(process: DaemonProcess, door: str) -> AsyncIterator[AsyncCalls]:
    """The daemon's client by ``door``: its ZeroMQ ROUTER, or its stream door."""
    settings = process.settings
    key = load_or_create_key(settings.key_file, create=False)
    client: AsyncCalls
    if door == "router":
        client = AsyncClient(settings.endpoint, key=key, timeout=30.0)
    else:
        client = StreamClient(stream_door(settings.endpoint), key=key, timeout=30.0)
    try:
        yield client
    finally:
        await client.close()


async def sleeping(client: AsyncCalls, runs: int) -> bool:
    status = await client.call("status", {})
    return bool(status["pts"]["sleep"]["running"] >= runs)


async def stopping_answer(client: AsyncCalls) -> RemoteError:
    """The daemon's answer to a ping once it stops (before, pings are answered)."""
    answer: list[RemoteError] = []

    async def refused() -> bool:
        try:
            await client.call("ping", {})
        except RemoteError as exc:
            answer.append(exc)
            return True
        return False

    await until(refused, timeout=STOP_TIMEOUT, every=0.01)
    return answer[0]


@pytest.mark.parametrize("door", ["router", "stream"])
async def test_a_stopping_daemon_answers_its_runs_and_refuses_new_requests_as_not_run(
        process: DaemonProcess, door: str) -> None:
    async with door_client(process, door) as client:
        # A job keeps the daemon stopping for its 2 s (jobs get a grace), while a run in flight
        # ends inside that time: it must get its result, on the door it came by.
        await client.call("submit", {"pts": "sleep", "input": {"seconds": 2}})
        run = asyncio.create_task(client.call("run", {"pts": "sleep", "input": {"seconds": 1}}))
        await until(lambda: sleeping(client, 2), timeout=30, every=0.02)
        process.process.terminate()      # SIGTERM

        refusal = await stopping_answer(client)
        assert refusal.code == ErrorCode.UNAVAILABLE
        assert refusal.message == STOPPING
        assert refusal.details == {"stopping": True}
        assert not_run(refusal)          # pnsweb's pool may send it to another node
        assert (await asyncio.wait_for(run, timeout=STOP_TIMEOUT))["result"] == {"slept": 1}
    assert process.process.wait(timeout=STOP_TIMEOUT) == 0


@pytest.mark.parametrize("door", ["router", "stream"])
async def test_a_run_the_stop_cuts_short_is_answered_so_before_the_process_exits(
        process: DaemonProcess, door: str) -> None:
    async with door_client(process, door) as client:
        run = asyncio.create_task(
            client.call("run", {"pts": "sleep", "input": {"seconds": 600}}))
        await until(lambda: sleeping(client, 1), timeout=30, every=0.02)
        process.process.terminate()
        with pytest.raises(RemoteError) as caught:
            await asyncio.wait_for(run, timeout=STOP_TIMEOUT)
    error: Any = caught.value
    assert error.code == ErrorCode.UNAVAILABLE
    assert error.message == CUT_SHORT            # not "the connection was lost"
    assert not not_run(error)                    # it may have run: nobody re-sends it
    assert process.process.wait(timeout=STOP_TIMEOUT) == 0
