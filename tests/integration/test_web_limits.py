"""Body limits and values the daemon hop cannot carry, through the real app, client and pnsd."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import encode_basic_auth

from pnsweb.app import create_app
from pnsweb.settings import User, hash_password, load_settings
from tests.integration.conftest import DaemonProcess, pnsweb_client

pytestmark = pytest.mark.slow
USER = ("user", "pw")
AUTH = {"Authorization": encode_basic_auth(*USER)}
ANONYMOUS_LIMIT = 64 << 10


@pytest.fixture
async def web(aiohttp_client: Any, pnsd: DaemonProcess) -> AsyncIterator[Any]:
    env = {"HOME": str(pnsd.home), "PNS_HOME": str(pnsd.home)}
    settings = load_settings(config=pnsd.config, env=env)
    user = User(USER[0], hash_password(USER[1]))
    settings = dataclasses.replace(settings, users=(user,), max_anonymous_body=ANONYMOUS_LIMIT)
    async with pnsweb_client(settings) as client:
        yield await aiohttp_client(create_app(settings, client=client))


async def test_anonymous_limit_holds_and_an_authenticated_caller_may_send_more(web: Any) -> None:
    value = "x" * (ANONYMOUS_LIMIT * 4)
    resp = await web.post("/v0.6/echo", json=[value])
    assert resp.status == 413
    assert (await resp.json())["error"] == "Payload too large."
    resp = await web.post("/v1/processes/echo/execution", json={"inputs": {"value": [value]}},
                          headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"value": [value]}


@pytest.mark.parametrize("text", [str(2**64), "1e400", "NaN", '"\\udfff"', "[" * 200 + "]" * 200])
async def test_a_value_the_daemon_cannot_carry_is_400_and_the_daemon_serves_on(
        web: Any, text: str) -> None:
    resp = await web.post("/v1/processes/echo/execution", headers=AUTH,
                          data=f'{{"inputs": {{"value": {text}}}}}',
                          skip_auto_headers=["Content-Type"])
    assert resp.status == 400
    assert json.loads(await resp.text())["detail"].startswith("the body ")
    good = await web.post("/v1/processes/echo/execution", headers=AUTH,
                          json={"inputs": {"value": 2**64 - 1}})
    assert good.status == 200 and await good.json() == {"value": 2**64 - 1}
