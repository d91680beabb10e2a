"""Replacing a process-mode PTS: each generation owns its work area, so a swap breaks no run.

A run admitted before the swap finishes in its generation's area; a run after the swap (and
after the replaced generation stopped) runs in the new one's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from protocols.client import AsyncClient
from tests.integration.conftest import Running, running_daemon, settings_for
from tests.waiting import until

pytestmark = pytest.mark.slow
OPTIONS = "demo = false\nswap_timeout = 10\ndrain_timeout = 10\n"
# waits (bounded) for the test's gate file, so a run can be held across a swap
RUN = """#!/bin/bash
touch "{marks}/started-$(cat input/who)"
for i in $(seq 1000); do [ -e "{marks}/gate" ] && break; sleep 0.01; done
echo "{version} $(cat input/who)" > output/out
"""


def write_spec(code: Path, version: str) -> dict[str, Any]:
    marks = code / "marks"
    marks.mkdir(parents=True, exist_ok=True)
    script = code / f"run-{version}"
    script.write_text(RUN.format(marks=marks, version=version))
    script.chmod(0o755)
    return {"mode": "process", "run": [str(script)], "version": version, "inputs": ["who"],
            "outputs": ["out"], "timeout": 20, "concurrency": 2}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_daemon(settings_for(tmp_path / "home", OPTIONS)) as started:
        yield started


async def run(client: AsyncClient, who: str) -> str:
    reply = await client.call("run", {"pts": "proc", "input": {"who": who}}, timeout=60)
    return str(reply["result"]["outputs"]["out"]).strip()


@pytest.mark.parametrize("how", ["replace", "reload"])
async def test_runs_before_and_after_a_process_mode_swap_succeed(
    node: Running, tmp_path: Path, how: str,
) -> None:
    code = tmp_path / "code"
    marks = code / "marks"
    async with node.client(timeout=60.0) as client:
        await client.call("pts.deploy", {"name": "proc", "spec": write_spec(code, "v1")})
        (marks / "gate").touch()
        assert await run(client, "first") == "v1 first"
        (marks / "gate").unlink()
        held = asyncio.create_task(run(client, "held"))
        await until((marks / "started-held").exists, timeout=20, every=0.01)
        if how == "replace":
            await client.call("pts.replace", {"name": "proc", "spec": write_spec(code, "v2")})
        else:
            path = node.settings.pts_dir / "proc.toml"
            write_spec(code, "v2")
            path.write_text(path.read_text().replace("v1", "v2"))
            assert (await client.call("reload", {}, timeout=60))["outcome"] == {
                "proc": "replaced"}
        (marks / "gate").touch()
        assert await held == "v1 held"
        await node.daemon.registry.settled()     # the replaced generation has stopped
        assert await run(client, "after") == "v2 after"
        assert await run(client, "again") == "v2 again"


async def test_a_swap_to_another_mode_and_back_keeps_serving(
    node: Running, tmp_path: Path,
) -> None:
    code = tmp_path / "code"
    (code / "marks").mkdir(parents=True)
    (code / "marks" / "gate").touch()
    (code / "inp.py").write_text("def run(data):\n    return {'outputs': {'out': 'inproc'}}\n")
    inproc = {"mode": "inproc", "entry": "inp:run", "pythonpath": [str(code)], "version": "i1"}
    async with node.client(timeout=60.0) as client:
        for op, spec in [("pts.deploy", write_spec(code, "v1")), ("pts.replace", inproc),
                         ("pts.replace", write_spec(code, "v3")),
                         ("pts.replace", write_spec(code, "v4"))]:
            await client.call(op, {"name": "proc", "spec": spec})
            await node.daemon.registry.settled()
            expected = "inproc" if spec["mode"] == "inproc" else f"{spec['version']} x"
            assert await run(client, "x") == expected
