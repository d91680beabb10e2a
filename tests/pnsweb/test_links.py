"""Links and Location: a malformed Host is a 400 in JSON, a good one is copied into links, and a
configured public URL replaces it everywhere."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from pnsweb.app import create_app
from pnsweb.links import check_host
from tests.pnsweb.fakes_v1 import AUTH, demo_daemon, settings

PATHS = ("/v0.6/", "/v1/", "/v1/openapi.json", "/healthz", "/v0.6/echo")


async def _raw(client: Any, head: bytes, *, as_json: bool = True) -> tuple[int, Any]:
    """Send ``head`` (a request without a body) as is; the status and the (JSON) body."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head)
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body) if as_json else body


def _head(path: str, host: bytes | None, version: bytes = b"1.1") -> bytes:
    method = b"POST" if path.endswith("echo") else b"GET"
    host_line = b"" if host is None else b"Host: " + host + b"\r\n"
    return (method + b" " + path.encode() + b" HTTP/" + version + b"\r\n" + host_line
            + b"Content-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    daemon, _book = demo_daemon()
    return await aiohttp_client(create_app(settings(), client=daemon))


@pytest.mark.parametrize("host", [b"", b"a b", b"x/y", b"h:99999", b"h:port", b'a"b', b"[::1",
                                  b"evil.com/path?q", b"h:"])
@pytest.mark.parametrize("path", PATHS)
async def test_a_malformed_host_is_400_in_json(client: Any, host: bytes, path: str) -> None:
    status, body = await _raw(client, _head(path, host))
    assert status == 400
    text = body.get("message") if path.startswith("/v0.6") else body.get("detail")
    assert "Host" in text


async def test_http11_without_host_is_400_and_http10_is_served(client: Any) -> None:
    # aiohttp's own parser refuses this one, before any middleware (its body is plain text)
    status, _body = await _raw(client, _head("/v1/", None), as_json=False)
    assert status == 400
    status, body = await _raw(client, _head("/v1/", None, b"1.0"))
    assert status == 200
    port = client.server.port
    assert body["links"][0]["href"] == f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("host", [b"example.org", b"example.org:8080", b"[::1]:5000",
                                  b"10.0.0.5", b"my_service.local:80"])
async def test_a_good_host_is_copied_into_links(client: Any, host: bytes) -> None:
    status, body = await _raw(client, _head("/v1/", host))
    assert status == 200
    assert body["links"][0]["href"] == f"http://{host.decode()}/v1"
    status, body = await _raw(client, _head("/v0.6/", host))
    assert body["APIs"]["GET"][0]["URL"].startswith(f"http://{host.decode()}/v0.6/")


async def test_public_url_replaces_the_host_in_every_link(aiohttp_client: Any) -> None:
    daemon, _book = demo_daemon()
    public = "https://pns.example.org/node1"
    client = await aiohttp_client(create_app(settings(public_url=public), client=daemon))
    headers = {"Host": "attacker.example"}
    landing = await (await client.get("/v1/", headers=headers)).json()
    assert {link["href"].split("/v1")[0] for link in landing["links"]} == {public}
    listing = await (await client.get("/v0.6/api", headers=headers)).json()
    assert all(api["URL"].startswith(public + "/v0.6/")
               for apis in listing["APIs"].values() for api in apis)
    openapi = await (await client.get("/v1/openapi.json", headers=headers)).json()
    assert openapi["servers"] == [{"url": public}]
    resp = await client.post("/v1/processes/echo/execution", json={"inputs": {"value": 1}},
                             headers={**AUTH, **headers, "Prefer": "respond-async"})
    assert resp.status == 201
    assert resp.headers["Location"].startswith(public + "/v1/jobs/")
    info = await resp.json()
    assert all(link["href"].startswith(public + "/v1/jobs/") for link in info["links"])
    job = await (await client.get(f"/v1/jobs/{info['jobID']}", headers={**AUTH, **headers})).json()
    assert all(link["href"].startswith(public) for link in job["links"])
    assert "attacker" not in json.dumps([landing, listing, openapi, info, job])


def test_check_host_accepts_ports_up_to_65535() -> None:
    check_host("h:65535", (1, 1))
    check_host(None, (1, 0))
