"""Hot swap against a real daemon: every bad input leaves the running version serving; deployed
specs survive a restart; reload, watch mode and the ``pnsd`` commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from protocols.client import AsyncClient
from protocols.errors import RemoteError
from tests.integration.conftest import (
    Running,
    running_daemon,
    settings_for,
    spawn_daemon,
)
from tests.integration.test_hot_swap import write_version
from tests.waiting import until

pytestmark = pytest.mark.slow
OPTIONS = "demo = false\nswap_timeout = 3\ndrain_timeout = 5\n"
HUNG_INIT = "import time\n\ndef init(data):\n    time.sleep(60)\n"
BAD_INIT = "def init(data):\n    raise RuntimeError('no licence for v2')\n"


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_daemon(settings_for(tmp_path / "home", OPTIONS)) as started:
        yield started


@pytest.fixture
async def deployed(node: Running, tmp_path: Path) -> AsyncIterator[tuple[AsyncClient, Path]]:
    """A client, and the code dir of PTS ``swap`` deployed at v1."""
    code = tmp_path / "code"
    code.mkdir()
    async with node.client(timeout=60.0) as client:
        await client.call("pts.deploy", {"name": "swap", "spec": write_version(code, "v1")})
        yield client, code


async def serves(client: AsyncClient) -> str:
    return str((await client.call("run", {"pts": "swap", "input": 1}))["result"]["version"])


def v2(code: Path, **changes: Any) -> dict[str, Any]:
    spec = write_version(code, "v2")
    spec.pop("selftest")
    return {**spec, **changes}


@pytest.mark.parametrize(("changes", "code", "words"), [
    ({"workers": "two"}, "bad_request", "'workers' must be an integer"),
    ({"mode": "container"}, "bad_request", "mode must be one of"),
    ({"entry": "no_such_module:run"}, "bad_request", "No module named 'no_such_module'"),
    ({"python": "/nonexistent/python3"}, "bad_request", "'/nonexistent/python3' not found"),
    ({"init": "swap_init:init", "module": BAD_INIT}, "bad_request", "no licence for v2"),
    ({"init": "swap_init:init", "module": HUNG_INIT}, "timeout", "not ready within 3 s"),
])
async def test_a_bad_replace_is_refused_with_its_reason_and_v1_keeps_serving(
    deployed: tuple[AsyncClient, Path], changes: dict[str, Any], code: str, words: str,
) -> None:
    client, code_dir = deployed
    if "module" in changes:
        (code_dir / "swap_init.py").write_text(changes.pop("module"))
    with pytest.raises(RemoteError) as caught:
        await client.call("pts.replace", {"name": "swap", "spec": v2(code_dir, **changes)})
    assert caught.value.code == code
    assert words in caught.value.message
    assert await serves(client) == "v1"


async def test_conflicts_and_unknown_names(deployed: tuple[AsyncClient, Path]) -> None:
    client, code_dir = deployed
    slow = v2(code_dir, init="swap_init:init")
    started = code_dir / "init-started"
    (code_dir / "swap_init.py").write_text(
        "import pathlib, time\n\ndef init(data):\n"
        f"    pathlib.Path({str(started)!r}).touch()\n    time.sleep(1)\n")
    first = asyncio.create_task(client.call("pts.replace", {"name": "swap", "spec": slow}))
    await until(started.exists, timeout=30, every=0.01)   # the first replace is in its init
    with pytest.raises(RemoteError) as second:
        await client.call("pts.replace", {"name": "swap", "spec": v2(code_dir)})
    assert second.value.code == "conflict"
    assert await serves(client) == "v1"
    assert (await first)["new_version"] == "v2"
    with pytest.raises(RemoteError) as again:
        await client.call("pts.deploy", {"name": "swap", "spec": v2(code_dir)})
    assert again.value.code == "conflict"
    for op in ("pts.replace", "pts.undeploy"):
        with pytest.raises(RemoteError) as unknown:
            await client.call(op, {"name": "nope", "spec": v2(code_dir)})
        assert unknown.value.code == "not_found"
    assert await serves(client) == "v2"


async def test_deployed_specs_survive_a_restart_and_undeploy_removes_them(
    tmp_path: Path,
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    for step in ("deploy", "check-and-undeploy", "check-gone"):
        settings = settings_for(tmp_path / "home", OPTIONS)     # read afresh, as a restart does
        async with running_daemon(settings) as node, node.client(timeout=60) as client:
            if step == "deploy":
                await client.call("pts.deploy", {"name": "swap", "who": "ann",
                                                 "spec": write_version(code, "v1")})
            elif step == "check-and-undeploy":
                assert await serves(client) == "v1"
                await client.call("pts.undeploy", {"name": "swap", "who": "ann"})
            else:
                assert "swap" not in (await client.call("status", {}))["pts"]
                events = (await client.call("pts.history", {"name": "swap"}))["events"]
                assert [(e["action"], e["who"]) for e in events] == [
                    ("undeploy", "ann"), ("deploy", "ann")]
    assert not (settings.pts_dir / "swap.toml").exists()


async def test_reload_applies_edited_spec_files_as_who_reload(
    node: Running, deployed: tuple[AsyncClient, Path],
) -> None:
    client, code_dir = deployed
    path = node.settings.pts_dir / "swap.toml"
    path.write_text(path.read_text().replace('"v1"', '"v2"').replace("swap_v1", "swap_v2"))
    write_version(code_dir, "v2")
    assert (await client.call("reload", {}, timeout=60))["outcome"] == {"swap": "replaced"}
    assert await serves(client) == "v2"
    assert (await client.call("reload", {}))["outcome"] == {}
    latest = (await client.call("pts.history", {"name": "swap"}))["events"][0]
    assert (latest["who"], latest["old_version"], latest["new_version"]) == ("reload", "v1", "v2")


async def test_watch_mode_deploys_a_file_dropped_into_pts_d(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", OPTIONS + "watch = true\n")
    code = tmp_path / "code"
    code.mkdir()
    async with running_daemon(settings) as node, node.client(timeout=30) as client:
        node.daemon.deployer.files.write("swap", write_version(code, "v1"))
        async def deployed() -> bool:
            """watch mode picked the file up"""
            return "swap" in (await client.call("status", {}))["pts"]

        await until(deployed, timeout=20, every=0.2)
        assert await serves(client) == "v1"


def test_the_pnsd_commands_deploy_replace_undeploy_and_show_history(tmp_path: Path) -> None:
    home = tmp_path / "home"
    code = tmp_path / "code"
    code.mkdir()
    running = spawn_daemon(home, OPTIONS)
    try:
        files = []
        for version in ("v1", "v2"):
            spec = write_version(code, version)
            spec.pop("selftest")
            toml = "\n".join(f"{k} = {json.dumps(v)}" for k, v in spec.items())
            files.append(tmp_path / f"{version}.toml")
            files[-1].write_text(f"[pts.swap]\n{toml}\n")
        deployed = running.cli("pts", "deploy", str(files[0]))
        assert deployed.returncode == 0, deployed.stderr
        assert json.loads(deployed.stdout)["new_version"] == "v1"
        replaced = running.cli("pts", "replace", "swap", str(files[1]))
        assert json.loads(replaced.stdout)["old_version"] == "v1", replaced.stderr
        wrong = running.cli("pts", "replace", "other", str(files[1]))
        assert wrong.returncode == 2 and "defines PTS 'swap'" in wrong.stderr
        assert running.cli("reload").returncode == 0
        assert running.cli("pts", "undeploy", "swap").returncode == 0
        gone = running.cli("pts", "undeploy", "swap")
        assert gone.returncode == 1 and "not_found" in gone.stderr
        history = json.loads(running.cli("pts", "history", "swap").stdout)
        assert [e["action"] for e in history] == ["undeploy", "undeploy", "replace", "deploy"]
        assert history[-1]["who"] and history[-1]["who"] != "unknown"
    finally:
        assert running.terminate() == 0
