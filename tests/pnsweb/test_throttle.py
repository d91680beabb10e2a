"""Failed logins back off per client: 429 with Retry-After and no password check while a client
waits; another client's right login never queues behind them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pnsweb import throttle as throttle_module
from pnsweb.app import create_app
from pnsweb.auth import VerifiedCache
from pnsweb.keys import THROTTLE, VERIFIED
from pnsweb.settings import verify_password
from pnsweb.throttle import LoginThrottle
from tests.pnsweb.fakes import ADMIN, USER, basic, demo_daemon, web_settings
from tests.waiting import until

WRONG = (USER[0], "wrong")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class GatedChecks:
    """The password check, counted; checks of the password "wrong" wait for ``release``."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[str] = []

    def __call__(self, password: str, stored: str) -> bool:
        self.calls.append(password)
        if password == "wrong":
            assert self.release.wait(timeout=20), "the gate was never opened"
        return verify_password(password, stored)


@pytest.fixture
def checks() -> Iterator[GatedChecks]:
    gate = GatedChecks()
    yield gate
    gate.release.set()          # a blocked scrypt thread must not outlive the test


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def app(checks: GatedChecks, clock: Clock) -> web.Application:
    app = create_app(web_settings(), client=demo_daemon())
    app[VERIFIED] = VerifiedCache(verify=checks)
    app[THROTTLE] = LoginThrottle(clock=clock)
    return app


@pytest.fixture
async def sessions(aiohttp_client: Any, app: web.Application) -> AsyncIterator[Any]:
    """``open(address)``: a session whose requests come from that loopback address."""
    client = await aiohttp_client(app)
    opened: list[aiohttp.ClientSession] = []

    def session_from(address: str) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)
        session = aiohttp.ClientSession(base_url=client.make_url(""), connector=connector)
        opened.append(session)
        return session

    yield session_from
    for session in opened:
        await session.close()


async def _status(session: aiohttp.ClientSession, credentials: tuple[str, str]) -> int:
    async with session.get("/v0.6/pnsconfig", headers=basic(credentials)) as resp:
        await resp.read()
        return resp.status


async def test_wrong_logins_of_one_client_never_delay_anothers_right_one(
        sessions: Any, checks: GatedChecks, app: web.Application) -> None:
    client_a, client_b = sessions("127.0.0.2"), sessions("127.0.0.3")
    first = asyncio.create_task(_status(client_a, WRONG))
    await until(lambda: checks.calls == ["wrong"])       # A's check holds a scrypt thread
    others = await asyncio.gather(*(_status(client_a, (USER[0], f"wrong{n}"))
                                    for n in range(99)))
    assert set(others) == {429}                      # refused at once, no scrypt work
    assert await _status(client_b, USER) == 200     # served while A's check still runs
    assert not first.done() and checks.calls == ["wrong", USER[1]]
    checks.release.set()
    assert await first == 401


async def test_failed_logins_back_off_with_429_and_retry_after(
        sessions: Any, checks: GatedChecks, clock: Clock) -> None:
    checks.release.set()
    client_a, client_b = sessions("127.0.0.2"), sessions("127.0.0.3")
    for _ in range(throttle_module.FREE_FAILURES + 1):
        assert await _status(client_a, WRONG) == 401
    checked = len(checks.calls)
    async with client_a.get("/v0.6/pnsconfig", headers=basic(USER)) as resp:
        assert resp.status == 429                       # even the right password waits
        assert resp.headers["Retry-After"] == "1"
        assert "failed logins" in (await resp.json())["message"]
    assert len(checks.calls) == checked                # no password check while waiting
    # another client is not slowed (with other credentials: a right login, once verified, is
    # served from the cache, whoever sends it)
    assert await _status(client_b, ADMIN) == 200
    assert await _status(client_b, USER) == 200         # USER's right login is now cached
    assert await _status(client_a, USER) == 429         # and still no answer for A
    clock.now += 1
    assert await _status(client_a, WRONG) == 401       # the 7th failure: wait 2 s
    async with client_a.get("/v0.6/pnsconfig", headers=basic(USER)) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "2"
    clock.now += 2
    assert await _status(client_a, USER) == 200        # a success clears the record
    assert await _status(client_a, WRONG) == 401


def test_waits_double_up_to_the_maximum_and_are_forgotten(clock: Clock) -> None:
    throttle = LoginThrottle(clock=clock)
    waits = []
    for _ in range(throttle_module.FREE_FAILURES + 10):
        throttle.failed("a", "bob")
        try:
            throttle.check("a", "bob")
            waits.append(0)
        except web.HTTPException:
            raise
        except Exception as exc:    # ApiError
            waits.append(int(exc.headers["Retry-After"]))      # type: ignore[attr-defined]
    assert waits[:throttle_module.FREE_FAILURES] == [0] * throttle_module.FREE_FAILURES
    assert waits[throttle_module.FREE_FAILURES:][:4] == [1, 2, 4, 8]
    assert max(waits) == throttle_module.MAX_WAIT
    throttle.check("a", "alice")            # another name of the same client is not slowed
    throttle.check("b", "bob")              # nor another client
    clock.now += throttle_module.FORGET_AFTER + 1
    throttle.check("a", "bob")
    assert len(throttle) == 0
