"""/v0.6 end to end: the real app and client in front of a real ``pnsd`` process."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pnsd.keyfile import load_or_create_key
from pnsweb.app import create_app
from pnsweb.settings import User, hash_password, load_settings
from protocols.client import AsyncClient
from tests.integration.conftest import DaemonProcess, kill_group_of, pnsweb_client, spawn_web_daemon
from tests.waiting import until

pytestmark = pytest.mark.slow
DATA = Path(__file__).parent.parent / "pnsweb" / "data"
ADMIN = ("admin", "pw")
KILL_MARGIN = 3.0       # seconds a killed run may take beyond its timeout to be answered


@pytest.fixture(scope="module")
def admin() -> User:
    return User(ADMIN[0], hash_password(ADMIN[1]), admin=True)


@pytest.fixture
async def web(aiohttp_client: Any, pnsd: DaemonProcess, admin: User) -> AsyncIterator[Any]:
    """The app over a real AsyncClient, its settings read by pnsweb's own config reader."""
    env = {"HOME": str(pnsd.home), "PNS_HOME": str(pnsd.home)}
    settings = load_settings(config=pnsd.config, env=env)
    settings = type(settings)(**{**vars(settings), "users": (admin,)})
    async with pnsweb_client(settings) as client:
        yield await aiohttp_client(create_app(settings, client=client))


def _auth() -> dict[str, str]:
    from aiohttp import encode_basic_auth  # noqa: PLC0415 - only the tests that modify use it

    return {"Authorization": encode_basic_auth(*ADMIN)}


async def test_settings_reader_finds_the_daemon(pnsd: DaemonProcess, tmp_path: Path) -> None:
    settings = load_settings(config=pnsd.config, env={"PNS_HOME": str(pnsd.home)})
    assert settings.endpoint == f"ipc://{tmp_path}/d.sock"
    assert settings.key


async def test_listing_and_echo(web: Any) -> None:
    listing = await (await web.get("/v0.6/")).json()
    assert "POST" in listing["APIs"]
    value = {"any": ["json", 1, None]}
    body = await (await web.post("/v0.6/echo", json=value)).json()
    assert body["result"] == value


async def test_testrun_runs_the_real_hello_script(web: Any) -> None:
    body = {"creator": "me", "rootcause": "it", "input": {"theName": "stranger"}}
    resp = await web.post("/v0.6/testrun", json=body, headers=_auth())
    assert resp.status == 200, await resp.text()
    reply = await resp.json()
    assert reply["result"]["theAnswer"].startswith("hello stranger! From ")
    assert reply["message"]["returncode"] == 0


async def test_testrun_tagged_round_trip(web: Any) -> None:
    request = json.loads((DATA / "fdi-testrun-request.json").read_text())
    resp = await web.post("/v0.6/testrun", json=request, headers=_auth())
    assert resp.status == 200, await resp.text()
    product = (await resp.json())["result"]
    assert product["_STID"] == "Product"
    assert product["_sets"]["data"]["theAnswer"]["data"].startswith("hello stranger!")


async def test_testcalc_tagged_round_trip(web: Any) -> None:
    request = json.loads((DATA / "fdi-testcalc-request.json").read_text())
    resp = await web.post("/v0.6/testcalc", json=request, headers=_auth())
    assert resp.status == 200, await resp.text()
    product = (await resp.json())["result"]
    assert list(product["_sets"]["data"]) == ["testdataset", "spectrum"]


async def test_concurrent_testruns_get_409_not_a_hang(web: Any) -> None:
    body = {"creator": "me", "rootcause": "it"}
    replies = await asyncio.gather(
        *(web.post("/v0.6/testrun", json=body, headers=_auth()) for _ in range(6)))
    statuses = sorted(r.status for r in replies)
    assert set(statuses) <= {200, 409} and 200 in statuses


async def test_sleep_is_killed_at_its_timeout(web: Any) -> None:
    started = time.monotonic()
    resp = await web.post("/v0.6/sleep/30", json={"timeout": 1}, headers=_auth())
    elapsed = time.monotonic() - started
    assert resp.status == 504, await resp.text()
    body = await resp.json()
    assert body["result"] < 0 and body["message"]["returncode"] == body["result"]
    assert elapsed < 1 + KILL_MARGIN


async def test_sleep_that_finishes_answers_zero(web: Any) -> None:
    resp = await web.post("/v0.6/sleep/0.1", headers=_auth())
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["result"] == 0


async def test_scripts_hooks_and_exchange_dirs(web: Any) -> None:
    text = (await (await web.get("/v0.6/run")).json())["result"]
    assert "hello" in text
    resp = await web.put("/v0.6/init", headers=_auth())
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["message"]["stdout"].startswith("The initialization script at")
    await web.post("/v0.6/testrun", json={"creator": "c", "rootcause": "r"}, headers=_auth())
    output = (await (await web.get("/v0.6/output")).json())["result"]
    assert output is None or "outfile" in output
    assert (await web.delete("/v0.6/clean", headers=_auth())).status == 200


async def test_testinit_and_pnsconf_round_trip(web: Any) -> None:
    assert (await web.put("/v0.6/testinit", headers=_auth())).status == 200
    config = (await (await web.get("/v0.6/pnsconfig", headers=_auth())).json())["result"]
    assert config["password"] == "***" and config["scripts"]["run"]
    config["timeout"] = 7
    resp = await web.put("/v0.6/pnsconf", json={"input": config}, headers=_auth())
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["result"]["timeout"] == 7


async def test_daemon_restart_is_503_then_recovers(web: Any, pnsd: DaemonProcess) -> None:
    assert (await web.get("/v0.6/init")).status == 200
    pnsd.terminate(timeout=60)
    resp = await web.get("/v0.6/init")
    assert resp.status == 503 and "Retry-After" in resp.headers
    again = spawn_web_daemon(pnsd.home)
    try:
        resp = await web.get("/v0.6/init")
        assert resp.status == 200, await resp.text()
    finally:
        again.terminate(timeout=60)


async def test_while_a_sleep_runs_every_locked_operation_is_409_at_once(
        web: Any, pnsd: DaemonProcess) -> None:
    settings = pnsd.settings
    key = load_or_create_key(settings.key_file, create=False)
    sleeping = asyncio.create_task(web.post("/v0.6/sleep/60", headers=_auth()))
    async with AsyncClient(settings.endpoint, key=key, timeout=30.0) as daemon:
        async def sleeping_now() -> bool:
            status = await daemon.call("status", {})
            return bool(status["pts"]["sleep-process"]["running"] == 1)
        await until(sleeping_now, timeout=30, every=0.02)
        calls = [("POST", "/v0.6/sleep/1", None), ("POST", "/v0.6/run", {"input": {}}),
                 ("POST", "/v0.6/testrun", {"creator": "c", "rootcause": "r"}),
                 ("PUT", "/v0.6/init", None), ("PUT", "/v0.6/config", None),
                 ("PUT", "/v0.6/testinit", None), ("DELETE", "/v0.6/clean", None),
                 ("PUT", "/v0.6/pnsconf", {"input": {"timeout": 8}})]
        started = time.monotonic()
        for method, path, body in calls:
            resp = await web.request(method, path, json=body, headers=_auth())
            assert resp.status == 409, (path, await resp.text())
            assert (await resp.json())["error"] == "Conflict. Updating."
        assert time.monotonic() - started < 10        # at once: none waited for the sleep
        kill_group_of("sleepPTS", pnsd.process.pid)
        assert (await sleeping).status == 502
    again = await web.put("/v0.6/testinit", headers=_auth())
    assert again.status == 200, await again.text()
    assert (await again.json())["result"] == 0 and (await again.json())["message"] == ""


async def test_input_and_output_are_empty_after_init_and_null_after_clean(web: Any) -> None:
    async def files(which: str) -> Any:
        return (await (await web.get(f"/v0.6/{which}")).json())["result"]

    assert (await web.put("/v0.6/init", headers=_auth())).status == 200
    assert (await files("input"), await files("output")) == ({}, {})
    assert (await web.delete("/v0.6/clean", headers=_auth())).status == 200
    assert (await files("input"), await files("output")) == (None, None)
    assert (await web.put("/v0.6/init", headers=_auth())).status == 200
    assert (await files("input"), await files("output")) == ({}, {})


async def test_a_cross_site_form_cannot_start_a_run(web: Any) -> None:
    # what <form enctype="text/plain"> with one field named '{..., "pad": "' and the value '"}'
    # sends, with the credentials the browser remembers for this server
    form = '{"creator": "c", "rootcause": "r", "input": {"theName": "x"}, "pad": "="}'
    resp = await web.post("/v0.6/testrun", data=form,
                          headers={**_auth(), "Origin": "http://evil.example",
                                   "Content-Type": "text/plain"})
    assert resp.status == 403
    assert (await (await web.get("/v0.6/output")).json())["result"] is None
