"""/v0.6 writes from another site's page are refused: a cross-site form cannot start a run."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict

from pnsweb.app import create_app
from pnsweb.routes_v06 import ROUTES
from tests.pnsweb.fakes import USER, FakeDaemon, basic, demo_daemon, web_settings

AUTH = basic(USER)
WRITES = [(r.method, r.path.replace("{secs}", "1")) for r in ROUTES if r.method != "GET"]
RUN = {"creator": "me", "rootcause": "it", "input": {"theName": "Ada"}}


@pytest.fixture
def daemon() -> FakeDaemon:
    return demo_daemon()


@pytest.fixture
async def client(aiohttp_client: Any, daemon: FakeDaemon) -> Any:
    return await aiohttp_client(create_app(web_settings(), client=daemon))


def own_origin(client: Any) -> str:
    return f"http://{client.host}:{client.port}"


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1",
                                    "https://127.0.0.1.evil.example", "not an origin"])
async def test_every_write_from_another_origin_is_403_and_reaches_no_daemon(
        client: Any, daemon: FakeDaemon, method: str, path: str, origin: str) -> None:
    resp = await client.request(method, "/v0.6" + path, json=RUN,
                                headers={**AUTH, "Origin": origin})
    assert resp.status == 403
    body = await resp.json()
    assert set(body) == {"error", "message", "timestamp"}
    assert body["error"] == "Forbidden." and "another site" in body["message"]
    assert daemon.calls == []


async def test_a_cross_site_write_is_refused_before_credentials_are_asked_for(
        client: Any) -> None:
    resp = await client.post("/v0.6/testrun", json=RUN, headers={"Origin": "http://evil.example"})
    assert resp.status == 403


@pytest.mark.parametrize("headers", [
    {"Sec-Fetch-Site": "cross-site"},
    CIMultiDict([("Origin", "{own}"), ("Origin", "http://evil.example")]),
])
async def test_a_browser_saying_cross_site_or_two_origins_are_refused(
        client: Any, daemon: FakeDaemon, headers: Any) -> None:
    sent = CIMultiDict(AUTH)
    for name, value in headers.items():
        sent.add(name, value.format(own=own_origin(client)))
    resp = await client.post("/v0.6/testrun", json=RUN, headers=sent)
    assert resp.status == 403
    assert daemon.calls_of("run") == []


@pytest.mark.parametrize("origin", [None, "{own}", "{own}/"])
async def test_no_origin_or_this_server_s_own_may_write(
        client: Any, daemon: FakeDaemon, origin: str | None) -> None:
    headers = dict(AUTH)
    if origin is not None:
        headers["Origin"] = origin.format(own=own_origin(client))
    resp = await client.post("/v0.6/testrun", json=RUN, headers=headers)
    assert resp.status == 200, await resp.text()
    assert len(daemon.calls_of("run")) == 1


async def test_reads_are_not_refused_whatever_the_origin(client: Any) -> None:
    resp = await client.get("/v0.6/input", headers={"Origin": "http://evil.example"})
    assert resp.status == 200


async def test_with_a_public_url_only_its_origin_is_this_site(
        aiohttp_client: Any, daemon: FakeDaemon) -> None:
    settings = web_settings(public_url="https://pns.example.org")
    client = await aiohttp_client(create_app(settings, client=daemon))
    # A rebound name (the attacker's host pointed here) matches its own Host header, not the
    # server's public origin.
    rebound = {**AUTH, "Host": "evil.example", "Origin": "http://evil.example"}
    assert (await client.post("/v0.6/testrun", json=RUN, headers=rebound)).status == 403
    public = {**AUTH, "Origin": "https://pns.example.org"}
    assert (await client.post("/v0.6/testrun", json=RUN, headers=public)).status == 200
