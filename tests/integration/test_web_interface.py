"""The declared interface end to end: a third-party OGC client (OWSLib) against the real pnsweb
and pnsd, PNG outputs by value and by reference, binary inputs, and refusals before anything
runs."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import sys
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import encode_basic_auth
from owslib.ogcapi.processes import Processes
from owslib.util import Authentication, http_get

from pnsweb.app import create_app
from pnsweb.settings import User, hash_password, load_settings
from protocols.client import AsyncClient
from protocols.errors import ErrorCode, RemoteError
from tests.integration.conftest import DaemonProcess, pnsweb_client, spawn_daemon
from tests.integration.interface_pts import SIGNATURE, png

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
USER = ("ada", "pw")
ADMIN = ("root", "pw-r")
AUTH = {"Authorization": encode_basic_auth(*USER)}
ADMIN_AUTH = {"Authorization": encode_basic_auth(*ADMIN)}
POLL_DEADLINE = 30.0
PNG = '{contentMediaType = "image/png"}'
PTS = f"""
[pts.picture]
mode = "worker"
entry = "tests.integration.interface_pts:draw"
pythonpath = [{str(ROOT)!r}]
title = "Picture"
inputs.size = {{title = "Size", schema = {{type = "integer", minimum = 1, maximum = 64}}}}
outputs.png = {{title = "The picture", schema = {PNG}}}
outputs.size = {{schema = {{type = "integer"}}}}

[pts.picture-process]
mode = "process"
dir = "pngpts"
run = ["drawPTS"]
inputs.size = {{schema = {{type = "integer", minimum = 1, maximum = 64}}}}
inputs.stamp = {{schema = {PNG}, minOccurs = 0}}
outputs.png = {{schema = {PNG}}}
outputs.note = {{schema = {{type = "string", contentMediaType = "text/plain"}}}}

[pts.measure]
mode = "worker"
entry = "tests.integration.interface_pts:measure"
pythonpath = [{str(ROOT)!r}]
inputs.image = {{schema = {PNG}}}
"""
SCRIPT = """#!{python}
import json, pathlib, sys
sys.path.insert(0, {root!r})
from tests.integration.interface_pts import png
with open({log!r}, "a") as log:
    log.write("ran\\n")
stamp = pathlib.Path("input/stamp")
size = json.loads(pathlib.Path("input/size").read_text())
pathlib.Path("output/png").write_bytes(stamp.read_bytes() if stamp.exists() else png(size))
pathlib.Path("output/note").write_text(f"a {{size}}x{{size}} picture")
"""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[DaemonProcess]:
    home = tmp_path / "home"
    scripts = home / "pngpts"
    scripts.mkdir(parents=True)
    script = scripts / "drawPTS"
    script.write_text(SCRIPT.format(python=sys.executable, root=str(ROOT),
                                    log=str(scripts / "runs.log")))
    script.chmod(0o755)
    running = spawn_daemon(home, f'endpoint = "ipc://{tmp_path}/d.sock"\n{PTS}')
    try:
        yield running
    finally:
        running.terminate()


def runs(node: DaemonProcess) -> int:
    log = node.home / "pngpts" / "runs.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture
async def server(aiohttp_server: Any, node: DaemonProcess) -> AsyncIterator[Any]:
    env = {"HOME": str(node.home), "PNS_HOME": str(node.home)}
    settings = dataclasses.replace(
        load_settings(config=node.config, env=env),
        users=(User(USER[0], hash_password(USER[1])),
               User(ADMIN[0], hash_password(ADMIN[1]), admin=True)))
    async with pnsweb_client(settings) as client:
        yield await aiohttp_server(create_app(settings, client=client))


def owslib_session(base: str) -> dict[str, Any]:
    """What a user of OWSLib does: list, describe, execute sync and async, read outputs."""
    auth = Authentication(*USER)
    api = Processes(base, auth=auth)
    seen: dict[str, Any] = {"ids": {p["id"] for p in api.processes()}}
    seen["description"] = api.process("picture")
    seen["document"] = api.execute("picture", {"size": 4})
    by_reference = api.execute("picture", {"size": 5},
                               outputs={"png": {"transmissionMode": "reference"}})
    href = by_reference["png"]["href"]
    fetched = http_get(href, auth=auth)
    seen["reference"] = (by_reference, fetched.headers["Content-Type"], fetched.content)
    accepted = api.execute("picture-process", {"size": 3}, async_=True)
    status = accepted
    deadline = time.monotonic() + POLL_DEADLINE
    while status["status"] in ("accepted", "running") and time.monotonic() < deadline:
        time.sleep(0.05)    # OWSLib has no push: it polls, as its users do
        status = http_get(f"{base}jobs/{accepted['jobID']}", auth=auth).json()
    seen["async_status"] = status
    results = next(link["href"] for link in status["links"] if link["rel"].endswith("results"))
    seen["async_results"] = http_get(results, auth=auth).json()
    return seen


async def test_owslib_lists_describes_executes_and_reads_json_and_png_outputs(
        server: Any) -> None:
    base = str(server.make_url("/v1/"))
    seen = await asyncio.to_thread(owslib_session, base)
    assert {"picture", "picture-process", "measure", "echo"} <= seen["ids"]
    description = seen["description"]
    assert description["title"] == "Picture"
    assert description["inputs"]["size"]["schema"] == {"type": "integer", "minimum": 1,
                                                       "maximum": 64}
    assert description["outputs"]["png"]["schema"]["contentMediaType"] == "image/png"
    assert description["outputs"]["png"]["schema"]["contentEncoding"] == "base64"
    document = seen["document"]
    assert document["size"] == 4                                     # a JSON output
    assert document["png"]["mediaType"] == "image/png"               # a PNG by value
    assert base64.b64decode(document["png"]["value"]) == png(4)
    by_reference, content_type, content = seen["reference"]
    assert list(by_reference) == ["png"] and by_reference["png"]["type"] == "image/png"
    assert content_type == "image/png" and content == png(5)        # a PNG by reference
    assert seen["async_status"]["status"] == "successful"
    results = seen["async_results"]
    assert base64.b64decode(results["png"]["value"]) == png(3)      # written by a script
    assert results["note"] == "a 3x3 picture"
    assert_is_png(content, 5)


def assert_is_png(data: bytes, size: int) -> None:
    assert data.startswith(SIGNATURE)
    rows = zlib.decompress(data[8 + 12 + 13 + 8:-12 - 4])      # the one IDAT chunk's data
    assert len(rows) == size * (1 + 3 * size)


async def test_a_binary_input_reaches_a_worker_as_bytes_and_a_script_as_a_file(
        server: Any, node: DaemonProcess) -> None:
    async with server_client(server) as web:
        image = base64.b64encode(png(2)).decode()
        measured = await web.post("/v1/processes/measure/execution", headers=AUTH, json={
            "inputs": {"image": {"value": image, "mediaType": "image/png"}}})
        assert measured.status == 200, await measured.text()
        assert await measured.json() == {"type": "bytes", "length": len(png(2)), "png": True}
        stamped = await web.post("/v1/processes/picture-process/execution", headers=AUTH, json={
            "inputs": {"size": 7, "stamp": image}, "outputs": {"png": {}}})
        assert stamped.content_type == "image/png"
        assert await stamped.read() == png(2)           # the file the script was given


@pytest.mark.parametrize(("inputs", "pointer", "rule"), [
    ({"size": 0}, "/inputs/size", "minimum"),
    ({"size": "big"}, "/inputs/size", "type"),
    ({}, "/inputs/size", "minOccurs"),
    ({"size": 2, "colour": "red"}, "/inputs/colour", "declared"),
    ({"size": 2, "stamp": {"value": "R0lG", "mediaType": "image/gif"}},
     "/inputs/stamp/mediaType", "contentMediaType"),
])
async def test_bad_inputs_are_400_naming_the_field_and_nothing_runs(
        server: Any, node: DaemonProcess, inputs: dict[str, Any], pointer: str,
        rule: str) -> None:
    async with server_client(server) as web:
        for prefer in ("respond-sync", "respond-async"):
            response = await web.post("/v1/processes/picture-process/execution",
                                      headers={**AUTH, "Prefer": prefer},
                                      json={"inputs": inputs})
            assert response.status == 400, await response.text()
            problem = await response.json()
            assert (problem["errors"][0]["pointer"], problem["errors"][0]["rule"]) \
                == (pointer, rule)
        jobs = await (await web.get("/v1/jobs", headers=AUTH)).json()
        assert jobs["numberMatched"] == 0
    assert runs(node) == 0


async def test_a_direct_client_is_held_to_the_same_interface(node: DaemonProcess) -> None:
    settings = node.settings
    async with AsyncClient(settings.endpoint, key=settings.key_file.read_bytes().strip(),
                           timeout=30.0) as direct:
        with pytest.raises(RemoteError) as caught:
            await direct.call("submit", {"pts": "picture-process", "input": {"size": 99}})
        assert caught.value.code == ErrorCode.BAD_REQUEST
        assert caught.value.details["errors"] == [{
            "input": "size", "pointer": "/size", "rule": "maximum",
            "message": "99 is greater than the maximum of 64"}]
        with pytest.raises(RemoteError) as binary:
            await direct.call("run", {"pts": "measure", "input": {"image": "not bytes"}})
        assert binary.value.details["errors"][0]["rule"] == "contentMediaType"
        reply = await direct.call("run", {"pts": "measure", "input": {"image": png(3)}})
        assert reply["result"]["png"] is True
    assert runs(node) == 0


async def test_a_spec_with_an_invalid_schema_is_refused_at_deploy_naming_the_field(
        server: Any, node: DaemonProcess, tmp_path: Path) -> None:
    spec = {"mode": "inproc", "entry": "pnsd.demo:echo",
            "inputs": {"x": {"schema": {"type": "whole number"}}}}
    async with server_client(server) as web:
        response = await web.post("/v1/processes", headers=ADMIN_AUTH,
                                  json={"name": "broken", "spec": spec})
        assert response.status == 400, await response.text()
        assert "inputs.x.schema" in (await response.json())["detail"]
        assert (await web.get("/v1/processes/broken")).status == 404
        output = {"mode": "inproc", "entry": "pnsd.demo:echo",
                  "outputs": {"y": {"file": "y.txt"}}}
        refused = await web.post("/v1/processes", headers=ADMIN_AUTH,
                                 json={"name": "broken", "spec": output})
        assert refused.status == 400 and "outputs.y.file" in (await refused.json())["detail"]
    toml = tmp_path / "broken.toml"
    toml.write_text('[pts.broken]\nmode = "inproc"\nentry = "pnsd.demo:echo"\n'
                    'inputs.x = {schema = {minimum = "low"}}\n')
    deployed = node.cli("pts", "deploy", str(toml))
    assert deployed.returncode == 1 and "inputs.x.schema" in deployed.stderr


def server_client(server: Any) -> aiohttp.ClientSession:
    """An HTTP session against the running test server."""
    return aiohttp.ClientSession(base_url=str(server.make_url("/")))
