"""The reference's one lock and exchange dirs, on the daemon's side: real pnsd, real ZeroMQ.

An operation with ``"lock": "hello"`` holds a slot of ``hello`` (one slot, no queue) while it
runs, whatever PTS it runs on; ``pts.files`` shows the exchange dirs a ``PUT /init`` made.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from protocols.client import AsyncClient
from protocols.errors import ErrorCode, RemoteError
from tests.integration.conftest import kill_group_of
from tests.waiting import until

pytestmark = pytest.mark.slow
LOCK = {"lock": "hello"}


async def _running(client: AsyncClient, pts: str) -> int:
    return int((await client.call("status", {}))["pts"][pts]["running"])


async def _busy(client: AsyncClient, op: str, body: dict[str, Any]) -> bool:
    try:
        await client.call(op, body)
    except RemoteError as exc:
        return exc.code == ErrorCode.BUSY
    return False


async def test_a_locked_sleep_makes_every_other_locked_operation_busy_at_once(
        client: AsyncClient) -> None:
    sleeping = asyncio.create_task(client.call(
        "run", {"pts": "sleep-process", "input": {"seconds": "60"}, **LOCK}))
    try:
        async def sleeping_now() -> bool:    # the lock is taken before the run starts
            return await _running(client, "sleep-process") == 1
        await until(sleeping_now, timeout=20, every=0.02)
        for op, body in [
            ("run", {"pts": "sleep-process", "input": {"seconds": "0"}, **LOCK}),
            ("run", {"pts": "hello", "input": {"infile": "x"}, **LOCK}),
            ("pts.hook", {"name": "hello", "hook": "init", **LOCK}),
            ("pts.hook", {"name": "hello", "hook": "clean", **LOCK}),
            ("demo.reset", dict(LOCK)),
            ("pts.update", {"name": "hello", "changes": {"timeout": 9}, **LOCK}),
        ]:
            assert await _busy(client, op, body), (op, body)
        # the lock is hello's slot: a direct client's hello run waits for it too, others do not
        assert await _busy(client, "run", {"pts": "hello", "input": {"infile": "x"}})
        assert (await client.call("run", {"pts": "echo", "input": 1}))["result"] == 1
        kill_group_of("sleepPTS", os.getpid())   # the locked run ends (failed): its slot is free
        with pytest.raises(RemoteError) as ended:
            await sleeping
        assert ended.value.code == ErrorCode.PTS_ERROR
    finally:
        sleeping.cancel()
    # the reply came once the run had ended: the slot it held is free again
    ran = await client.call("run", {"pts": "hello", "input": {"infile": "Ada"}, **LOCK})
    assert ran["result"]["outputs"]["outfile"].startswith("hello Ada!")
    assert (await client.call("demo.reset", dict(LOCK)))["restored"] == []


async def test_a_lock_naming_no_pts_is_refused_and_holds_nothing(client: AsyncClient) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.call("run", {"pts": "echo", "input": 1, "lock": "nope"})
    assert caught.value.code == ErrorCode.NOT_FOUND
    with pytest.raises(RemoteError) as caught:
        await client.call("demo.reset", {"lock": 3})
    assert caught.value.code == ErrorCode.BAD_REQUEST
    ran = await client.call("run", {"pts": "hello", "input": {"infile": "Ada"}, **LOCK})
    assert ran["result"]["returncode"] == 0


async def test_exchange_dirs_are_empty_after_init_and_gone_after_clean(
        client: AsyncClient) -> None:
    async def files(which: str) -> Any:
        return (await client.call("pts.files", {"name": "hello", "which": which}))["files"]

    await client.call("pts.hook", {"name": "hello", "hook": "init"})
    assert (await files("input"), await files("output")) == ({}, {})
    await client.call("run", {"pts": "hello", "input": {"infile": "Ada"}})
    assert await files("input") == {"infile": "Ada"}
    assert (await files("output"))["outfile"].startswith("hello Ada!")
    await client.call("pts.hook", {"name": "hello", "hook": "clean"})
    assert (await files("input"), await files("output")) == (None, None)
    await client.call("pts.hook", {"name": "hello", "hook": "init"})
    assert (await files("input"), await files("output")) == ({}, {})
