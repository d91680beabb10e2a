"""The README's "Write your own PTS", as a new user follows it: its files, deployed with
``pnsd pts deploy``, answer the same inputs the same way in all three modes, through the CLI,
/v1 and a direct client; a bad input is refused by each, naming the rule."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import encode_basic_auth

from pnsweb.app import create_app
from pnsweb.settings import User, hash_password, load_settings
from protocols.client import AsyncClient
from protocols.errors import ErrorCode, RemoteError
from tests.integration.conftest import DaemonProcess, pnsweb_client

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[2] / "README.md"
CREDENTIALS = ("ada", "pw")
AUTH = {"Authorization": encode_basic_auth(*CREDENTIALS)}
MODES = ("greet", "greet-worker", "greet-process")
INPUTS = {"name": "Ada", "times": 2}
GREETING = {"greeting": "hello Ada! hello Ada!"}


def readme_files() -> dict[str, str]:
    """File name -> text of each code block of the section that names its file."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Write your own PTS", 1)[1].split("\n## ", 1)[0]
    files = {}
    for block in re.findall(r"```[a-z]*\n(.*?)```", section, flags=re.S):
        found = re.search(r"^# file: (\S+)$", "\n".join(block.splitlines()[:2]), flags=re.M)
        if found:
            files[found.group(1)] = block
    return files


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """The README's files in a directory of their own (not the daemon's home)."""
    where = tmp_path / "mypts"
    where.mkdir()
    for name, text in readme_files().items():
        path = where / name
        path.write_text(text, encoding="utf-8")
        if text.startswith("#!"):
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return where


@pytest.fixture
async def web(aiohttp_client: Any, pnsd: DaemonProcess) -> AsyncIterator[Any]:
    env = {"HOME": str(pnsd.home), "PNS_HOME": str(pnsd.home)}
    settings = dataclasses.replace(load_settings(config=pnsd.config, env=env),
                                   users=(User(CREDENTIALS[0], hash_password(CREDENTIALS[1])),))
    async with pnsweb_client(settings) as client:
        yield await aiohttp_client(create_app(settings, client=client))


def test_the_readme_holds_the_example_of_every_mode() -> None:
    assert set(readme_files()) == {"greet.toml", "greet.py", "greet-worker.toml",
                                   "greet-process.py", "greet-process.toml"}


async def test_the_readme_pts_works_in_every_mode_with_the_same_inputs(
        pnsd: DaemonProcess, example: Path, web: Any) -> None:
    for spec in ("greet.toml", "greet-worker.toml", "greet-process.toml"):
        deployed = pnsd.cli("pts", "deploy", str(example / spec), timeout=120)
        assert deployed.returncode == 0, deployed.stderr
    key = pnsd.settings
    async with AsyncClient(key.endpoint, key=(key.key_file.read_bytes().strip()),
                           timeout=60.0) as direct:
        for name in MODES:
            ran = pnsd.cli("run", name, "--input", json.dumps(INPUTS))
            assert ran.returncode == 0, ran.stderr
            assert outputs(name, json.loads(ran.stdout)) == GREETING
            response = await web.post(f"/v1/processes/{name}/execution", headers=AUTH,
                                      json={"inputs": INPUTS, "response": "document"})
            assert response.status == 200, await response.text()
            assert await response.json() == GREETING
            reply = await direct.call("run", {"pts": name, "input": INPUTS})
            assert outputs(name, reply["result"]) == GREETING
            described = await (await web.get(f"/v1/processes/{name}")).json()
            assert described["inputs"]["times"]["schema"]["maximum"] == 10
            assert described["inputs"]["times"]["minOccurs"] == 0
            assert list(described["outputs"]) == ["greeting"]
            await refused_everywhere(pnsd, web, direct, name)


def outputs(name: str, result: Any) -> Any:
    """The outputs in a run's result: a process-mode run's is its outcome record, whose
    ``outputs`` holds the files (the CLI and direct clients see the record)."""
    if name == "greet-process":
        assert result["returncode"] == 0 and result["stderr"] == ""
        return result["outputs"]
    return result


async def refused_everywhere(pnsd: DaemonProcess, web: Any, direct: AsyncClient,
                             name: str) -> None:
    """``times`` above its maximum: refused by /v1, the direct client and the CLI alike."""
    bad = {"name": "Ada", "times": 11}
    response = await web.post(f"/v1/processes/{name}/execution", headers=AUTH,
                              json={"inputs": bad})
    assert response.status == 400
    [error] = (await response.json())["errors"]
    assert (error["input"], error["pointer"], error["rule"]) == (
        "times", "/inputs/times", "maximum")
    with pytest.raises(RemoteError) as caught:
        await direct.call("run", {"pts": name, "input": bad})
    assert caught.value.code == ErrorCode.BAD_REQUEST
    assert caught.value.details["errors"][0]["pointer"] == "/times"
    ran = pnsd.cli("run", name, "--input", json.dumps(bad))
    assert ran.returncode == 1 and "bad_request" in ran.stderr and "maximum" in ran.stderr


async def test_a_missing_module_names_the_paths_it_looked_in(
        pnsd: DaemonProcess, example: Path) -> None:
    (example / "greet.py").rename(example / "renamed.py")
    deployed = pnsd.cli("pts", "deploy", str(example / "greet.toml"), timeout=120)
    assert deployed.returncode == 1
    assert "No module named 'greet'" in deployed.stderr
    assert f"looked in {example}" in deployed.stderr        # "." was the spec file's dir
    assert os.fspath(example) in deployed.stderr
