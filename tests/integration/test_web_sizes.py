"""Size limits across pnsweb -> pnsd: over-size results are streamed, over-size requests get 413,
and after each the link between pnsweb and pnsd still serves (never a 503 for good)."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import encode_basic_auth

from pnsd.keyfile import load_or_create_key
from pnsd.spec import parse_spec
from pnsweb import ogc
from pnsweb.app import create_app
from pnsweb.ogcvalues import outputs_of, results_document
from pnsweb.settings import User, hash_password, load_settings
from protocols.client import AsyncClient
from protocols.errors import ErrorCode, RemoteError
from tests.integration.conftest import DaemonProcess, pnsweb_client, spawn_daemon
from tests.integration.test_sizes import BIG_PTS, LIMIT, big_home
from tests.integration.test_web_v1 import wait_for_status

pytestmark = pytest.mark.slow
CREDENTIALS = ("carol", "pw")
AUTH = {"Authorization": encode_basic_auth(*CREDENTIALS)}
OTHER = {"Authorization": encode_basic_auth("dave", "pw2")}
FILE_BYTES = 900_000      # three of them: over the limit and over what libzmq let through


@pytest.fixture
def big_pnsd(tmp_path: Path) -> Iterator[DaemonProcess]:
    home = big_home(tmp_path / "home")
    (home / "bigpts" / "runbig").write_text(
        f"#!/bin/sh\nfor n in a b c; do head -c {FILE_BYTES} /dev/urandom > output/$n; done\n")
    running = spawn_daemon(home, f'endpoint = "ipc://{tmp_path}/d.sock"\n{BIG_PTS}')
    try:
        yield running
    finally:
        running.terminate()


@pytest.fixture
async def direct(big_pnsd: DaemonProcess) -> AsyncIterator[AsyncClient]:
    settings = big_pnsd.settings
    key = load_or_create_key(settings.key_file, create=False)
    async with AsyncClient(settings.endpoint, key=key, max_bytes=LIMIT) as client:
        yield client


@pytest.fixture
async def web(aiohttp_client: Any, big_pnsd: DaemonProcess) -> AsyncIterator[Any]:
    env = {"HOME": str(big_pnsd.home), "PNS_HOME": str(big_pnsd.home)}
    settings = load_settings(config=big_pnsd.config, env=env)
    assert settings.max_message_bytes == LIMIT
    settings = dataclasses.replace(
        settings, users=(User(CREDENTIALS[0], hash_password(CREDENTIALS[1])),
                         User("dave", hash_password("pw2"))))
    async with pnsweb_client(settings, timeout=20.0) as client:
        yield await aiohttp_client(create_app(settings, client=client))


async def still_serves(web: Any) -> None:
    response = await web.get("/v1/processes")
    assert response.status == 200, await response.text()
    echo = await web.post("/v1/processes/echo/execution", headers=AUTH,
                          json={"inputs": {"value": [1, 2]}})
    assert echo.status == 200 and await echo.json() == {"value": [1, 2]}


def expected_document(result: Any) -> Any:
    spec = parse_spec("big", {"mode": "process", "run": ["runbig"], "outputs": ["a", "b", "c"]})
    model = ogc.model_of({"spec": spec.public(),
                          "interface": spec.interface.described(process=True)})
    return results_document(model, outputs_of(model, result))


async def test_results_over_the_limit_stream_to_their_owner_only_and_the_link_stays(
    web: Any, direct: AsyncClient,
) -> None:
    submitted = await web.post("/v1/processes/big/execution", json={"inputs": {}},
                               headers={**AUTH, "Prefer": "respond-async"})
    assert submitted.status == 201, await submitted.text()
    job_id = (await submitted.json())["jobID"]
    await wait_for_status(web, job_id, "successful")
    assert (await web.get(f"/v1/jobs/{job_id}/results")).status == 401
    other = await web.get(f"/v1/jobs/{job_id}/results", headers=OTHER)
    assert other.status == 404, await other.text()     # not streamed to another user
    response = await web.get(f"/v1/jobs/{job_id}/results", headers=AUTH)
    assert response.status == 200, await response.text()
    assert response.headers.get("Content-Length") is None     # streamed, chunk by chunk
    document = await response.json()
    stored = (await direct.result(job_id))["result"]
    assert document == expected_document(stored)
    assert len(base64.b64decode(document["a"]["value"])) == FILE_BYTES
    await still_serves(web)


async def test_a_sync_run_over_the_limit_is_recorded_and_streamed(web: Any) -> None:
    response = await web.post("/v1/processes/big/execution", headers=AUTH,
                              json={"inputs": {}, "response": "document"})
    assert response.status == 200, await response.text()
    document = await response.json()
    assert sorted(document) == ["a", "b", "c"]
    job_id = response.headers["Link"].split("/jobs/")[1].split(">")[0]
    again = await (await web.get(f"/v1/jobs/{job_id}/results", headers=AUTH)).json()
    assert again == document
    assert (await web.get(f"/v1/jobs/{job_id}/results", headers=OTHER)).status == 404
    raw = await web.post("/v1/processes/big/execution", headers=AUTH,
                         json={"inputs": {}, "outputs": {"b": {}}})
    assert raw.status == 200 and raw.content_type == "application/octet-stream"
    assert len(await raw.read()) == FILE_BYTES
    await still_serves(web)


async def test_a_body_whose_msgpack_form_grows_past_the_limit_goes_in_parts(
    web: Any, direct: AsyncClient,
) -> None:
    """Over the daemon's message limit once packed, the input is uploaded in parts (SPEC.md,
    "Large inputs") and the run answers; its result, over the limit too, is streamed."""
    floats = [0.5] * (LIMIT // 6)     # about 4 bytes each in JSON, 9 in msgpack
    response = await web.post("/v1/processes/echo/execution", headers=AUTH,
                              json={"inputs": {"value": floats}})
    assert response.status == 200, await response.text()
    assert await response.json() == {"value": floats}     # streamed: the results document
    job_id = response.headers["Link"].split("/jobs/")[1].split(">")[0]
    with pytest.raises(RemoteError) as caught:     # recorded whole: too large to read back
        await direct.call("job.input", {"job": job_id})
    assert caught.value.code == ErrorCode.TOO_LARGE and caught.value.details["size"] > LIMIT
    await still_serves(web)


async def test_a_client_that_stops_reading_a_streamed_result_stalls_nothing(
    web: Any, direct: AsyncClient,
) -> None:
    """A results stream the client walks away from ends there: pnsweb and the daemon serve on,
    and the whole result is still there for the next reader."""
    submitted = await web.post("/v1/processes/big/execution", json={"inputs": {}},
                               headers={**AUTH, "Prefer": "respond-async"})
    job_id = (await submitted.json())["jobID"]
    await wait_for_status(web, job_id, "successful")
    response = await web.get(f"/v1/jobs/{job_id}/results", headers=AUTH)
    assert response.status == 200
    assert len(await response.content.read(1000)) > 0      # a little, then gone
    response.close()
    await still_serves(web)
    again = await web.get(f"/v1/jobs/{job_id}/results", headers=AUTH)
    document = await again.json()
    assert document == expected_document((await direct.result(job_id))["result"])
