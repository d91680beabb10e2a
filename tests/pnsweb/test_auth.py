"""HTTP Basic on modifying calls: 401 only for credentials, 403 for non-admins, a safe cache."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from pnsweb import auth
from pnsweb.app import create_app
from pnsweb.auth import VerifiedCache
from pnsweb.keys import VERIFIED
from pnsweb.routes_v06 import ROUTES, Access
from pnsweb.settings import User
from tests.pnsweb.fakes import ADMIN, USER, FakeDaemon, basic, demo_daemon, web_settings


@pytest.fixture
def daemon() -> FakeDaemon:
    return demo_daemon()


@pytest.fixture
async def client(aiohttp_client: Any, daemon: FakeDaemon) -> Any:
    return await aiohttp_client(create_app(web_settings(), client=daemon))


def _raw(text: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(text).decode()}


async def test_missing_credentials_is_401_with_a_challenge(client: Any, daemon: Any) -> None:
    resp = await client.put("/v0.6/init")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith('Basic realm="pns"')
    body = await resp.json()
    assert body["error"] == "Unauthorized. Authentication needed to modify."
    assert daemon.calls == []


@pytest.mark.parametrize("credentials", [(ADMIN[0], "wrong"), ("mallory", ADMIN[1]), ("", "")])
async def test_wrong_credentials_are_401(client: Any, credentials: tuple[str, str]) -> None:
    resp = await client.put("/v0.6/init", headers=basic(credentials))
    assert resp.status == 401
    assert "WWW-Authenticate" in resp.headers


@pytest.mark.parametrize(
    "header",
    [
        {"Authorization": "Basic"},
        {"Authorization": "Basic !!!not-base64!!!"},
        {"Authorization": "Bearer abc.def"},
        {"Authorization": ""},
        {"Authorization": "Basic " + "A" * 3},
        _raw(b"no-colon-here"),
        _raw(b"\xff\xfe:\xff"),
    ],
)
async def test_malformed_authorization_is_401_never_500(
    client: Any, header: dict[str, str]
) -> None:
    resp = await client.post("/v0.6/run", json={"input": {}}, headers=header)
    assert resp.status == 401
    assert "WWW-Authenticate" in resp.headers
    assert (await resp.json())["error"].startswith("Unauthorized")


async def test_right_credentials_pass(client: Any) -> None:
    assert (await client.put("/v0.6/init", headers=basic(USER))).status == 200
    assert (await client.put("/v0.6/init", headers=basic(ADMIN))).status == 200


async def test_non_admin_on_an_admin_call_is_403_not_401(client: Any, daemon: Any) -> None:
    resp = await client.put("/v0.6/pnsconf", json={"input": {"timeout": 5}}, headers=basic(USER))
    assert resp.status == 403
    assert "WWW-Authenticate" not in resp.headers
    assert (await resp.json())["error"] == "Forbidden."
    assert "pts.update" not in daemon.ops


async def test_get_routes_are_public_except_pnsconfig(client: Any) -> None:
    assert (await client.get("/v0.6/init")).status == 200
    assert (await client.get("/v0.6/pnsconfig")).status == 401
    assert (await client.get("/v0.6/pnsconfig", headers=basic(USER))).status == 200


async def test_echo_needs_no_credentials(client: Any) -> None:
    assert (await client.post("/v0.6/echo", json=1)).status == 200


def test_every_modifying_route_but_echo_needs_credentials() -> None:
    for route in ROUTES:
        public = (route.method == "GET" and route.path != "/pnsconfig") or route.path == "/echo"
        assert (route.access is Access.PUBLIC) == public, route
    assert {r.path for r in ROUTES if r.access is Access.ADMIN} == {"/pnsconf"}


@pytest.mark.parametrize("route", [r for r in ROUTES if r.access is not Access.PUBLIC],
                         ids=lambda r: f"{r.method} {r.path}")
async def test_each_protected_route_refuses_anonymous_calls(
    client: Any, daemon: FakeDaemon, route: Any
) -> None:
    path = "/v0.6" + route.path.replace("{secs}", "1")
    resp = await client.request(route.method, path, json={})
    assert resp.status == 401
    assert daemon.calls == []


async def test_verified_credentials_are_cached_and_wrong_ones_are_not(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[str] = []
    real = auth.verify_password

    def counting(password: str, stored: str) -> bool:
        checks.append(password)
        return real(password, stored)

    monkeypatch.setattr(auth, "verify_password", counting)
    for _ in range(3):
        assert (await client.put("/v0.6/init", headers=basic(USER))).status == 200
    assert len(checks) == 1
    for _ in range(2):
        assert (await client.put("/v0.6/init", headers=basic((USER[0], "nope")))).status == 401
    assert len(checks) == 3
    cache = client.server.app[VERIFIED]
    assert len(cache) == 1


def test_the_cache_never_holds_the_password() -> None:
    cache = VerifiedCache()
    header = basic(("bob", "builder"))["Authorization"]
    token = cache.token(header)
    bob = User("bob", "hash")
    cache.put(token, bob)
    assert b"builder" not in token and header.split()[1].encode() not in token
    assert token != VerifiedCache().token(header)          # keyed per process
    assert cache.token(basic(("ab", "c"))["Authorization"]) != cache.token(
        basic(("a", "bc"))["Authorization"])
    assert cache.get(token) is bob


def test_the_cache_evicts_the_least_recently_used() -> None:
    cache = VerifiedCache(size=2)
    users = {n: User(n, "hash") for n in ("one", "two", "three")}
    one, two, three = (cache.token(basic((n, "p"))["Authorization"]) for n in users)
    cache.put(one, users["one"])
    cache.put(two, users["two"])
    assert cache.get(one) is users["one"]      # one is now the most recent
    cache.put(three, users["three"])
    assert cache.get(two) is None
    assert cache.get(one) is users["one"] and cache.get(three) is users["three"]


async def test_a_header_that_is_not_ascii_is_refused_not_failed(client: Any) -> None:
    resp = await client.put("/v0.6/init", headers={"Authorization": "Basic b\u00f6b"})
    assert resp.status == 401


@pytest.mark.parametrize(
    ("header", "expected"),
    [("Basic " + base64.b64encode(b"bob:a:b").decode(), ("bob", "a:b")),
     ("basic " + base64.b64encode("j\u00f6rg:p\u00e4ss".encode()).decode(),
      ("j\u00f6rg", "p\u00e4ss")),
     ("Basic " + base64.b64encode(b":").decode(), ("", ""))],
)
def test_decode_basic_reads_utf8_and_keeps_colons_in_passwords(
    header: str, expected: tuple[str, str]
) -> None:
    assert auth.decode_basic(header) == expected
