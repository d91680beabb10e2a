"""The stdio transport with real workers: a worker that breaks its stream, closes its stdout,
floods its stderr or speaks another protocol version gets a clear error on its run and is
restarted with backoff, and its neighbour carries on; a stdio PTS is hot-swapped under load."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import zmq
from structlog.testing import capture_logs

from harness.procs import naming
from pnsd.errors import Unavailable, WorkerDied
from pnsd.hosts.worker import WorkerHost
from pnsd.hosts.workerslot import WorkerTuning
from pnsd.spec import parse_spec
from protocols.client import AsyncClient
from protocols.context import RunContext
from protocols.errors import RemoteError
from tests.integration.conftest import Running, running_daemon, settings_for
from tests.waiting import until

pytestmark = pytest.mark.slow

KEY = b"stdio-test-key"
FAKE = Path(__file__).with_name("stdio_fake.py")
FAST = WorkerTuning(heartbeat=0.2, missed_beats=3, start_timeout=20.0, cancel_grace=0.5,
                    restarts=5, restart_window=60.0, backoff_first=0.05, backoff_max=0.5)
HostMaker = Callable[..., Awaitable[WorkerHost]]


@pytest.fixture
async def make_host(tmp_path: Path) -> AsyncIterator[HostMaker]:
    context = zmq.Context()
    hosts: list[WorkerHost] = []

    async def make(table: Mapping[str, Any], tuning: WorkerTuning = FAST) -> WorkerHost:
        spec = parse_spec(f"s{len(hosts)}", {"mode": "worker", "transport": "stdio", **table})
        host = WorkerHost(spec, context=context, run_dir=tmp_path / "run", key=KEY,
                          tuning=tuning)
        hosts.append(host)
        await host.start()
        return host

    try:
        yield make
    finally:
        for host in hosts:
            await host.stop(grace=1.0)
        context.term()
        assert [pid for pid, _ in naming(str(FAKE), environ=False)] == []


@pytest.fixture
def versions(tmp_path: Path) -> Path:
    """The file the fake worker reads the protocol range of its next hello from."""
    return tmp_path / "protocols"


def announce(versions: Path, announced: str) -> None:
    versions.write_text(announced)


def fake(versions: Path) -> dict[str, Any]:
    return {"entry": "fake:run", "command": [sys.executable, str(FAKE)],
            "env": {"FAKE_PROTOCOLS": str(versions)}}


async def run(host: WorkerHost, data: Any) -> Any:
    return await host.run(data, timeout=20, ctx=RunContext())


async def check_bad_run(make_host: HostMaker, versions: Path, what: str, error: str,
                        tuning: WorkerTuning = FAST) -> None:
    """``what`` fails with ``error``; the worker is restarted, the neighbour untouched."""
    neighbour = await make_host({"entry": "pnsd.demo:echo"})
    neighbour_pids = neighbour.state().details["pids"]
    host = await make_host(fake(versions), tuning)
    assert await run(host, "before") == "before"
    with pytest.raises(WorkerDied, match=error):
        await run(host, what)
    assert await run(host, "after") == "after"        # waits for the restarted worker
    assert host.state().details["restarts"] == 1
    assert neighbour.state().details["pids"] == neighbour_pids
    assert await run(neighbour, "still here") == "still here"


async def test_garbage_on_stdout_fails_the_run_and_the_worker_is_restarted(
        make_host: HostMaker, versions: Path) -> None:
    await check_bad_run(make_host, versions, "garbage",
                        r"broken stdio stream: record of \d+ bytes over the limit .*garbage")


async def test_a_record_whose_frames_overrun_it_breaks_the_stream(
        make_host: HostMaker, versions: Path) -> None:
    await check_bad_run(make_host, versions, "partial",
                        "broken stdio stream: frame of 255 bytes overruns its record")


async def test_a_worker_that_exits_inside_a_record_fails_its_run(
        make_host: HostMaker, versions: Path) -> None:
    await check_bad_run(make_host, versions, "partial-exit", "exit code 0")


async def test_a_worker_that_closes_its_stdout_is_killed_and_restarted(
        make_host: HostMaker, versions: Path) -> None:
    patient = WorkerTuning(heartbeat=1.0, missed_beats=10, start_timeout=20.0,
                           backoff_first=0.05)    # the closed stdout is seen before silence
    await check_bad_run(make_host, versions, "close", "closed its stdout and kept running",
                        patient)


async def test_a_worker_that_closes_its_stdin_is_killed_and_restarted(
        make_host: HostMaker, versions: Path) -> None:
    patient = WorkerTuning(heartbeat=1.0, missed_beats=10, start_timeout=20.0,
                           backoff_first=0.05)
    await check_bad_run(make_host, versions, "close-stdin", "closed its stdin and kept running",
                        patient)


async def test_a_flood_on_stderr_is_capped_and_the_run_succeeds(
        make_host: HostMaker, versions: Path) -> None:
    host = await make_host(fake(versions))
    with capture_logs() as logs:
        assert await run(host, "flood") == "flood"           # 5 MB of stderr lines
    lines = [e for e in logs if e["event"] == "worker_output"]
    assert 0 < len(lines) < 1000 and all(e["stream"] == "stderr" for e in lines)
    assert any(e["event"] == "worker_output_dropped" for e in logs)
    assert await run(host, "next") == "next"
    assert host.state().details["restarts"] == 0


async def test_a_worker_of_an_unknown_protocol_version_fails_the_start_clearly(
        make_host: HostMaker, versions: Path) -> None:
    announce(versions, "7-9")
    with pytest.raises(Unavailable) as caught:
        await make_host(fake(versions))
    assert "worker speaks protocol 7-9; this daemon speaks 1-2" in caught.value.message
    assert "refused: worker speaks protocol 7-9" in caught.value.message   # its stderr


async def test_a_restarted_worker_of_an_unknown_version_spends_the_budget_with_backoff(
        make_host: HostMaker, versions: Path) -> None:
    neighbour = await make_host({"entry": "pnsd.demo:echo"})
    tuning = WorkerTuning(heartbeat=0.2, restarts=2, restart_window=60.0, backoff_first=0.05,
                          start_timeout=20.0, cancel_grace=0.5)
    host = await make_host(fake(versions), tuning)
    announce(versions, "3-4")
    with capture_logs() as logs:
        with pytest.raises(WorkerDied, match="exit code 0"):
            await run(host, "partial-exit")
        with pytest.raises(Unavailable, match="restart budget exhausted"):
            await run(host, "waits for a worker that never comes")
    state = host.state()
    assert state.state == "unavailable"
    assert "hello refused: worker speaks protocol 3-4; this daemon speaks 1-2" in state.reason
    assert [e["event"] for e in logs].count("worker_refused") == 2
    assert await run(neighbour, "fine") == "fine"


@pytest.mark.parametrize(("announced", "accepted"), [("1-1", True), ("2-5", True),
                                                     ("2-1", False), ("0-2", False)])
async def test_the_hello_range_is_checked(make_host: HostMaker, versions: Path,
                                          announced: str, accepted: bool) -> None:
    announce(versions, announced)
    if accepted:
        host = await make_host(fake(versions))
        assert await run(host, "ok") == "ok"
    else:
        with pytest.raises(Unavailable, match="malformed protocol range"):
            await make_host(fake(versions))


VERSIONED = '''
def run(data):
    print("a stray print goes to the log, not into the stream")
    return {{"version": {version!r}, "data": data}}
'''


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    settings = settings_for(tmp_path / "home", "demo = false\nswap_timeout = 20\n"
                                               "drain_timeout = 10\n")
    async with running_daemon(settings) as started:
        yield started


async def more_replies(replies: list[str], count: int = 30) -> None:
    seen = len(replies)
    await until(lambda: len(replies) >= seen + count, timeout=30)


async def test_a_stdio_pts_is_swapped_under_load_without_a_failed_run(
        node: Running, tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()

    def spec(version: str, transport: str) -> dict[str, Any]:
        (code / f"sw_{version}.py").write_text(VERSIONED.format(version=version))
        return {"mode": "worker", "entry": f"sw_{version}:run", "version": version,
                "workers": 2, "pythonpath": [str(code)], "transport": transport,
                "selftest": {"input": "probe", "expect": {"version": version}}}

    replies: list[str] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def load(client: AsyncClient) -> None:
        while not stop.is_set():
            try:
                reply = await client.call("run", {"pts": "sw", "input": 1}, timeout=30)
            except (RemoteError, TimeoutError) as exc:
                failures.append(repr(exc))
            else:
                replies.append(reply["result"]["version"])

    async with node.client(timeout=60.0) as client:
        await client.call("pts.deploy", {"name": "sw", "spec": spec("v1", "stdio")}, timeout=60)
        loops = [asyncio.create_task(load(client)) for _ in range(4)]
        for version, transport in (("v2", "stdio"), ("v3", "zmq"), ("v4", "stdio")):
            await more_replies(replies)
            await client.call("pts.replace", {"name": "sw", "spec": spec(version, transport)},
                              timeout=60)
        await more_replies(replies)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*loops), 30)
        status = (await client.call("status", {}))["pts"]["sw"]
    assert failures == []
    assert list(dict.fromkeys(replies)) == ["v1", "v2", "v3", "v4"]   # by first reply
    assert status["version"] == "v4" and status["ready"] == 2
