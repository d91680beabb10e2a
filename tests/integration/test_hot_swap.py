"""Hot swap under load: replace a worker-mode PTS 5 times (good, broken, good, broken, good)
while direct clients and the web API keep running it. Zero failed or lost requests, every reply
from the version its run was admitted to, and no old worker process left afterwards."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import encode_basic_auth

from harness.procs import alive, cmdline, naming
from pnsweb.app import create_app
from pnsweb.settings import User, WebSettings, hash_password
from protocols.client import AsyncClient
from protocols.errors import RemoteError
from tests.integration.conftest import Running, running_daemon, settings_for
from tests.waiting import until

pytestmark = pytest.mark.slow
ADMIN = ("root", "pw")
AUTH = {"Authorization": encode_basic_auth(*ADMIN)}
DIRECT_LOOPS = 8
WEB_LOOPS = 4
MAX_PER_LOOP = 5000          # the load is bounded even if the swaps were slow
GOOD = '''
VERSION = {version!r}

def run(data):
    return {{"version": VERSION, "data": data}}
'''
BROKEN_AT_IMPORT = 'raise ImportError("{version} is broken on purpose")\n'


def write_version(code: Path, version: str, *, broken: bool = False) -> dict[str, Any]:
    """Module ``swap_<version>`` in ``code`` and a worker-mode spec for it."""
    text = BROKEN_AT_IMPORT if broken else GOOD
    (code / f"swap_{version}.py").write_text(text.format(version=version))
    return {"mode": "worker", "entry": f"swap_{version}:run", "version": version, "workers": 2,
            "pythonpath": [str(code)], "timeout": 10,
            "selftest": {"input": "probe", "expect": {"version": version}}}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    settings = settings_for(tmp_path / "home", "demo = false\nswap_timeout = 20\n"
                                               "drain_timeout = 10\n")
    async with running_daemon(settings) as started:
        yield started


@dataclass
class Timeline:
    """Which version is current, and whether a swap is under way, as the test sees it."""

    current: str
    swapping: bool = False
    replies: list[tuple[str, bool, str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    sent: int = 0

    def start(self) -> tuple[str, bool]:
        self.sent += 1
        return self.current, self.swapping


async def direct_load(client: AsyncClient, timeline: Timeline, stop: asyncio.Event) -> None:
    for i in range(MAX_PER_LOOP):
        if stop.is_set():
            return
        current, swapping = timeline.start()
        try:
            reply = await client.call("run", {"pts": "swap", "input": i}, timeout=30)
        except (RemoteError, TimeoutError) as exc:
            timeline.failures.append(repr(exc))
            continue
        timeline.replies.append((current, swapping, reply["result"]["version"], reply["job"]))


async def web_load(web: Any, timeline: Timeline, stop: asyncio.Event) -> None:
    for i in range(MAX_PER_LOOP):
        if stop.is_set():
            return
        current, swapping = timeline.start()
        response = await web.post("/v1/processes/swap/execution", headers=AUTH,
                                  json={"inputs": {"input": i}})
        if response.status != 200:
            timeline.failures.append(f"{response.status}: {await response.text()}")
            continue
        job = response.headers["Link"].split("/jobs/")[1].split(">")[0]
        timeline.replies.append((current, swapping, (await response.json())["version"], job))


def pids_of(status: dict[str, Any]) -> list[int]:
    return list(status["pts"]["swap"]["pids"])


def workers_running(entry_prefix: str) -> list[int]:
    """Pids of live processes whose command line names an entry starting with the prefix."""
    return [pid for pid, _ in naming(entry_prefix, environ=False)
            if any(arg.startswith(entry_prefix) for arg in cmdline(pid).split())]


async def swap_five_times(client: AsyncClient, code: Path, timeline: Timeline,
                          old_pids: list[int]) -> list[str]:
    """Replace v1 with v2 (good), v3 (broken), v4 (good), v5 (broken), v6 (good)."""
    errors = []
    for number in range(2, 7):
        version, broken = f"v{number}", number % 2 == 1
        spec = write_version(code, version, broken=broken)
        if number == 5:
            spec = write_version(code, version)
            spec["selftest"]["expect"] = {"version": "something else"}
        await _load_ran(timeline)             # on the current version
        old_pids += pids_of(await client.call("status", {}))
        timeline.swapping = True
        try:
            await client.call("pts.replace", {"name": "swap", "spec": spec, "who": "test"},
                              timeout=60)
        except RemoteError as exc:
            errors.append(exc.message)
        else:
            timeline.current = version
        timeline.swapping = False
    await _load_ran(timeline)
    return errors


async def _load_ran(timeline: Timeline, runs: int = 50) -> None:
    """Wait until the load has had ``runs`` more replies."""
    seen = len(timeline.replies)
    await until(lambda: len(timeline.replies) >= seen + runs, timeout=30)


async def test_five_swaps_under_load_fail_nothing_and_leave_no_old_worker(
    node: Running, tmp_path: Path, aiohttp_client: Any,
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    async with node.client(timeout=60.0) as client:
        await client.call("pts.deploy", {"name": "swap", "spec": write_version(code, "v1")},
                          timeout=60)
        web_settings = WebSettings(endpoint=node.settings.endpoint, key=node.key,
                                   users=(User(ADMIN[0], hash_password(ADMIN[1]), admin=True),))
        web = await aiohttp_client(create_app(web_settings, client=client))
        timeline, stop, old_pids = Timeline("v1"), asyncio.Event(), []
        load = [asyncio.create_task(direct_load(client, timeline, stop))
                for _ in range(DIRECT_LOOPS)]
        load += [asyncio.create_task(web_load(web, timeline, stop)) for _ in range(WEB_LOOPS)]
        errors = await swap_five_times(client, code, timeline, old_pids)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*load), 60)

        assert timeline.failures == []
        assert len(timeline.replies) == timeline.sent > 200
        assert "v3 is broken on purpose" in errors[0] and "keeps serving" in errors[0]
        assert "selftest expected" in errors[1] and len(errors) == 2
        for current, swapping, got, _job in timeline.replies:
            assert got == current or (swapping and got in _next_versions(current)), (current, got)
        for _current, _swapping, got, job in timeline.replies[::7]:   # a sample: 1 in 7
            assert (await client.call("job.status", {"job": job}))["job"]["version"] == got
        assert {got for _c, _s, got, _j in timeline.replies} == {"v1", "v2", "v4", "v6"}

        await asyncio.wait_for(node.daemon.registry.settled(), 30)
        final = pids_of(await client.call("status", {}))
        assert all(alive(pid) for pid in final)
        assert [pid for pid in set(old_pids) - set(final) if alive(pid)] == []
        # failed generations' workers are killed: wait for them to be reaped
        await until(lambda: sorted(workers_running("swap_v")) == sorted(final), timeout=10,
                    every=0.1)
        assert sorted(workers_running("swap_v")) == sorted(final)
        history = (await client.call("pts.history", {"name": "swap"}))["events"]
        assert [(e["new_version"], e["outcome"]) for e in history] == [
            ("v6", "ok"), ("v5", "pts_error"), ("v4", "ok"), ("v3", "bad_request"),
            ("v2", "ok"), ("v1", "ok")]
        assert os.getpid() not in final


def _next_versions(current: str) -> set[str]:
    """During a swap from ``current`` a reply may come from it or from the next good one."""
    number = int(current[1:])
    return {current, f"v{number + 1}", f"v{number + 2}"}
