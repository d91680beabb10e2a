"""Hot swap on real inproc hosts: deploy, replace, undeploy, bad input, audit and spec files."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pnsd.audit import AuditLog
from pnsd.config import load_settings
from pnsd.deploy import Deployer, SwapTiming
from pnsd.errors import Cancelled, Conflict, DaemonError, InvalidSpec, NotFound, RunTimeout
from pnsd.hosts.inproc import InprocHost
from pnsd.jobs.scheduler import Scheduler
from pnsd.jobs.store import JobStore
from pnsd.registry import Registry
from pnsd.specfiles import SpecFiles, value
from tests.waiting import until

MODULE = '''
import asyncio
VERSION = {version!r}

def run(data):
    return {{"version": VERSION, "data": data}}

async def slow(data):
    await asyncio.sleep(data)
    return VERSION

def bad_init(data):
    raise RuntimeError("init exploded: no licence file")

async def hung_init(data):
    await asyncio.sleep(60)
'''


@dataclass
class Node:
    deployer: Deployer
    registry: Registry
    scheduler: Scheduler
    code: Path
    files: SpecFiles

    def spec(self, version: str, **more: Any) -> dict[str, Any]:
        """A spec of module ``swapmod`` at ``version`` (the module is rewritten on disk)."""
        (self.code / "swapmod.py").write_text(MODULE.format(version=version))
        return {"mode": "inproc", "entry": "swapmod:run", "version": version,
                "pythonpath": [str(self.code)], **more}

    async def serves(self, name: str = "p") -> str:
        _job, result = await self.scheduler.run(name, None)
        return str(result["version"])


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    executor = ThreadPoolExecutor(4)
    store = JobStore(tmp_path / "jobs.db", files_dir=tmp_path / "jobs")
    await store.open()
    audit = AuditLog(store)
    await audit.open()
    registry = Registry(lambda spec: InprocHost(spec, executor=executor))
    scheduler = Scheduler(registry, store)
    files = SpecFiles(tmp_path / "pts.d", config=None)
    code = tmp_path / "code"
    code.mkdir()
    deployer = Deployer(registry, audit, files, timing=SwapTiming(swap=1.0, drain=5.0))
    try:
        yield Node(deployer, registry, scheduler, code, files)
    finally:
        await scheduler.shutdown(grace=1)
        await registry.stop_all(grace=1)
        await store.close()
        executor.shutdown(wait=False, cancel_futures=True)


async def test_deploy_serves_and_writes_the_spec_file(node: Node) -> None:
    reply = await node.deployer.deploy("p", node.spec("v1"), who="alice")
    assert reply["new_version"] == "v1" and reply["old_version"] is None
    assert await node.serves() == "v1"
    written = tomllib.loads(node.files.path("p").read_text())["pts"]["p"]
    assert written["version"] == "v1" and written["entry"] == "swapmod:run"


async def test_replace_swaps_in_a_fresh_import_and_history_records_it(node: Node) -> None:
    await node.deployer.deploy("p", node.spec("v1"), who="alice")
    reply = await node.deployer.replace("p", node.spec("v2"), who="bob")
    assert (reply["old_version"], reply["new_version"]) == ("v1", "v2")
    assert await node.serves() == "v2"
    events = await node.deployer.history("p")
    assert [(e["action"], e["who"], e["old_version"], e["new_version"], e["outcome"])
            for e in events] == [("replace", "bob", "v1", "v2", "ok"),
                                 ("deploy", "alice", None, "v1", "ok")]
    assert events[0]["at"] >= events[1]["at"] > 0


async def test_a_run_started_before_the_swap_finishes_on_the_old_version(node: Node) -> None:
    await node.deployer.deploy("p", node.spec("v1", entry="swapmod:slow"), who="a")
    old_run = asyncio.create_task(node.scheduler.run("p", 0.3))
    await until(lambda: node.registry.get("p").running == 1)
    await node.deployer.replace("p", node.spec("v2", entry="swapmod:slow"), who="a")
    _job, new_result = await node.scheduler.run("p", 0)
    _job, old_result = await old_run
    assert (old_result, new_result) == ("v1", "v2")


@pytest.mark.parametrize(("change", "error", "words"), [
    ({"timeout": "soon"}, InvalidSpec, "'timeout' must be a number"),
    ({"mode": "teleport"}, InvalidSpec, "mode must be one of"),
    ({"entry": "no_such_module_xyz:run"}, InvalidSpec, "cannot import 'no_such_module_xyz'"),
    ({"entry": "swapmod:missing"}, InvalidSpec, "is not a callable"),
    ({"init": "swapmod:bad_init"}, DaemonError, "init exploded: no licence file"),
    ({"init": "swapmod:hung_init"}, RunTimeout, "not ready within 1 s (its init"),
    ({"selftest": {"input": 1, "expect": {"version": "v1"}}}, DaemonError,
     "selftest expected"),
    ({"selftest": {"expect": 1}}, InvalidSpec, "'selftest' must be a table with 'input'"),
    ({"env": {"A": None}}, InvalidSpec, "must be a table of strings"),
    ({"inputs": {"x": {"schema": {"type": 12}}}}, InvalidSpec,
     "inputs.x.schema/type is not valid JSON Schema"),
    ({"inputs": {"x": {"schema": {"type": "integer"}}}, "selftest": {"input": {"x": "one"}}},
     InvalidSpec, "'selftest.input' does not fit the declared inputs"),
    ({"outputs": {"version": {"schema": {"type": "integer"}}}, "selftest": {"input": 1}},
     DaemonError, "output 'version' at /version fails type"),
])
async def test_a_bad_new_version_is_refused_and_the_old_one_keeps_serving(
    node: Node, change: dict[str, Any], error: type[DaemonError], words: str,
) -> None:
    await node.deployer.deploy("p", node.spec("v1"), who="a")
    with pytest.raises(error, match=words.replace("(", r"\(")) as caught:
        await node.deployer.replace("p", {**node.spec("v2"), **change}, who="a")
    assert await node.serves() == "v1"
    assert tomllib.loads(node.files.path("p").read_text())["pts"]["p"]["version"] == "v1"
    latest = (await node.deployer.history("p"))[0]
    assert latest["outcome"] == caught.value.code and latest["error"] == caught.value.message


async def test_a_failed_new_version_reports_it_and_keeps_the_old_one(node: Node) -> None:
    await node.deployer.deploy("p", node.spec("v1"), who="a")
    with pytest.raises(DaemonError) as caught:
        await node.deployer.replace("p", {**node.spec("v2"), "init": "swapmod:bad_init"}, who="a")
    assert "v2 failed its init" in caught.value.message
    assert "version v1 keeps serving" in caught.value.message


async def test_two_replaces_at_once_the_second_is_a_conflict(node: Node) -> None:
    await node.deployer.deploy("p", node.spec("v1"), who="a")
    slow = {**node.spec("v2"), "selftest": {"input": 0.3}, "entry": "swapmod:slow"}
    first = asyncio.create_task(node.deployer.replace("p", slow, who="a"))
    await until(lambda: node.deployer.busy("p"))
    with pytest.raises(Conflict, match="under way"):
        await node.deployer.replace("p", node.spec("v3"), who="b")
    await first
    assert (await node.deployer.history("p"))[1]["outcome"] == "conflict"


async def test_deploy_of_an_existing_name_is_a_conflict(node: Node) -> None:
    await node.deployer.deploy("p", node.spec("v1"), who="a")
    with pytest.raises(Conflict, match="exists already"):
        await node.deployer.deploy("p", node.spec("v2"), who="a")
    assert await node.serves() == "v1"


async def test_replace_and_undeploy_of_an_unknown_name_are_not_found(node: Node) -> None:
    with pytest.raises(NotFound):
        await node.deployer.replace("nope", node.spec("v1"), who="a")
    with pytest.raises(NotFound):
        await node.deployer.undeploy("nope", who="a")


async def test_undeploy_fails_queued_runs_and_drains_running_ones(node: Node) -> None:
    await node.deployer.deploy("p", node.spec("v1", entry="swapmod:slow"), who="a")
    running = asyncio.create_task(node.scheduler.run("p", 0.3))
    queued = asyncio.create_task(node.scheduler.run("p", 0))
    await until(lambda: node.registry.get("p").admitted == 2)
    await node.deployer.undeploy("p", who="a")
    assert not node.files.path("p").exists()
    with pytest.raises(DaemonError, match="PTS p was undeployed"):
        await queued
    _job, result = await running
    assert result == "v1"
    with pytest.raises(NotFound):
        await node.serves()
    await asyncio.wait_for(node.registry.settled(), 5)


async def test_runs_past_the_drain_time_are_cancelled_with_the_new_version(node: Node) -> None:
    node.deployer.timing = SwapTiming(swap=1.0, drain=0.1)
    await node.deployer.deploy("p", node.spec("v1", entry="swapmod:slow"), who="a")
    long_run = asyncio.create_task(node.scheduler.run("p", 30))
    await until(lambda: node.registry.get("p").running == 1)
    await node.deployer.replace("p", node.spec("v2", entry="swapmod:slow"), who="a")
    with pytest.raises(Cancelled, match="replaced by version v2"):
        await asyncio.wait_for(long_run, 5)


async def test_reload_applies_only_the_differences(node: Node, tmp_path: Path) -> None:
    await node.deployer.deploy("p", node.spec("v1"), who="a")
    await node.deployer.deploy("q", node.spec("v1"), who="a")
    specs = load_settings(home=tmp_path, env={"HOME": str(tmp_path)}).pts
    assert await node.deployer.apply({n: s for n, s in specs.items() if n in ("p", "q")}) == {}
    node.files.write("p", node.spec("v2"))
    node.files.remove("q")
    fresh = load_settings(home=tmp_path, env={"HOME": str(tmp_path)}).pts
    outcome = await node.deployer.apply({n: s for n, s in fresh.items() if n in ("p", "q")})
    assert outcome == {"p": "replaced", "q": "removed"}
    assert await node.serves("p") == "v2"
    assert (await node.deployer.history("p"))[0]["who"] == "reload"


def test_the_spec_writer_round_trips_through_tomllib(tmp_path: Path) -> None:
    table = {"mode": "worker", "entry": "m:f", "version": 'v"1\\\n\x7f\u00e9\U0001f600',
             "timeout": 1e-05, "workers": 3, "inline": False, "pythonpath": ["/a b", "c"],
             "env": {"A-1": "x", "weird key": "y"}, "limits": {"memory_mb": 100},
             "selftest": {"input": {"x": [1, 2.5, True, {"y": "z"}]}, "expect": []}}
    files = SpecFiles(tmp_path, config=None)
    files.write("my-pts.1", table)
    assert tomllib.loads(files.path("my-pts.1").read_text())["pts"]["my-pts.1"] == table
    with pytest.raises(InvalidSpec, match="null"):
        value({"input": None}, "selftest")


def test_a_pts_defined_in_the_config_file_is_not_written_to_pts_d(tmp_path: Path) -> None:
    config = tmp_path / "pnsd.toml"
    config.write_text('[pts.c]\nmode = "inproc"\nentry = "m:f"\n')
    files = SpecFiles(tmp_path / "pts.d", config=config)
    with pytest.raises(Conflict, match="change it there"):
        files.check_writable("c")
    with pytest.raises(Conflict, match=r"not deployed in pts\.d"):
        files.check_removable("c")
    files.check_writable("other")
