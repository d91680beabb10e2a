"""/v0.6/pnsconfig and /v0.6/pnsconf: secrets masked, a validated admin-only partial update."""

from __future__ import annotations

from typing import Any

import pytest

from pnsweb.app import create_app
from tests.pnsweb.fakes import ADMIN, USER, FakeDaemon, basic, demo_daemon, web_settings


@pytest.fixture
def daemon() -> FakeDaemon:
    return demo_daemon()


@pytest.fixture
async def client(aiohttp_client: Any, daemon: FakeDaemon) -> Any:
    settings = web_settings(key=b"k" * 32)
    return await aiohttp_client(create_app(settings, client=daemon))


async def _config(client: Any) -> dict[str, Any]:
    resp = await client.get("/v0.6/pnsconfig", headers=basic(USER))
    assert resp.status == 200
    result: dict[str, Any] = (await resp.json())["result"]
    return result


async def _put(client: Any, document: Any, who: tuple[str, str] = ADMIN) -> Any:
    return await client.put("/v0.6/pnsconf", json=document, headers=basic(who))


async def test_pnsconfig_shows_scripts_and_timeout_with_secrets_masked(client: Any) -> None:
    config = await _config(client)
    assert config["scripts"] == {"init": ["initPTS"], "config": ["configPTS"],
                                 "run": ["runPTS"], "clean": ["cleanPTS"]}
    assert config["timeout"] == 10.0
    assert config["password"] == "***" and config["key"] == "***"
    assert config["username"] == ADMIN[0] and config["port"] == 5000


async def test_pnsconfig_leaks_no_secret(client: Any) -> None:
    text = await (await client.get("/v0.6/pnsconfig", headers=basic(USER))).text()
    for secret in ("scrypt$", "kkkk", ADMIN[1], USER[1], "s3cret"):
        assert secret not in text


async def test_round_trip_of_the_unchanged_document_is_a_no_op(
    client: Any, daemon: FakeDaemon
) -> None:
    config = await _config(client)
    resp = await _put(client, {"input": config})
    assert resp.status == 200
    body = await resp.json()
    assert body["message"] == "nothing changed" and body["result"] == config
    assert "pts.update" not in daemon.ops


async def test_a_changed_timeout_is_applied(client: Any, daemon: FakeDaemon) -> None:
    config = await _config(client)
    config["timeout"] = 42
    resp = await _put(client, {"input": config})
    assert resp.status == 200
    assert (await resp.json())["result"]["timeout"] == 42
    assert daemon.calls_of("pts.update")[-1].body == {
        "name": "hello", "changes": {"timeout": 42.0}, "who": "alice", "lock": "hello"}
    assert (await _config(client))["timeout"] == 42


async def test_a_partial_update_names_only_what_changes(client: Any, daemon: FakeDaemon) -> None:
    resp = await _put(client, {"input": {"timeout": 7.5}})
    assert resp.status == 200
    assert daemon.calls_of("pts.update")[-1].body["changes"] == {"timeout": 7.5}


@pytest.mark.parametrize("scripts", [
    {"init": ["/bin/evil"], "config": ["configPTS"], "run": ["runPTS"], "clean": ["cleanPTS"]},
    {"run": ["runPTS"]},
    "runPTS",
])
async def test_any_change_to_scripts_is_403(client: Any, daemon: FakeDaemon, scripts: Any) -> None:
    resp = await _put(client, {"input": {"scripts": scripts}})
    assert resp.status == 403
    assert (await resp.json())["error"] == "Forbidden."
    assert "pts.update" not in daemon.ops


@pytest.mark.parametrize(("document", "status"), [
    ({"input": {"colour": "red"}}, 400),
    ({"input": {"timeout": "10"}}, 400),
    ({"input": {"timeout": 0}}, 400),
    ({"input": {"timeout": True}}, 400),
    ({"input": {"port": "5000"}}, 400),
    ({"input": []}, 400),
    ({"timeout": 5}, 400),
    ({"input": {"password": "new one"}}, 403),
    ({"input": {"port": 6000}}, 403),
])
async def test_bad_updates_are_refused(
    client: Any, daemon: FakeDaemon, document: Any, status: int
) -> None:
    resp = await _put(client, document)
    assert resp.status == status
    assert "pts.update" not in daemon.ops


async def test_a_masked_secret_sent_back_is_a_no_op(client: Any, daemon: FakeDaemon) -> None:
    resp = await _put(client, {"input": {"password": "***", "key": "***"}})
    assert resp.status == 200


async def test_pnsconf_is_for_admins_only(client: Any, daemon: FakeDaemon) -> None:
    assert (await _put(client, {"input": {"timeout": 5}}, who=USER)).status == 403
    assert (await client.put("/v0.6/pnsconf", json={"input": {"timeout": 5}})).status == 401
    assert daemon.ops == []


async def test_pnsconf_refuses_invalid_json(client: Any) -> None:
    resp = await client.put("/v0.6/pnsconf", data=b"{", headers=basic(ADMIN))
    assert resp.status == 400
