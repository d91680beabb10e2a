"""The Node.js worker runtime (workers/node) under pnsd's worker host, over ZeroMQ and stdio.

The same cases as the Python runtime's: echo (bytes as a blob frame), hooks, progress and log
lines, cancel, a crash, a hang, a missing entry, a failing run, a result that cannot be sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from harness.procs import alive
from pnsd.errors import InvalidSpec, PtsFailed, RunTimeout, WorkerDied
from pnsd.hosts.worker import WorkerHost
from pnsd.hosts.workerslot import WorkerTuning
from pnsd.spec import parse_spec
from protocols.codec import Codec
from protocols.context import RunContext
from tests.integration.conftest import spawn_daemon
from tests.waiting import until

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).resolve().parents[2] / "workers" / "node"
NODE = shutil.which("node")
KEY = b"node-worker-test-key"
FAST = WorkerTuning(heartbeat=0.2, missed_beats=3, start_timeout=20.0, cancel_grace=0.5,
                    restarts=5, restart_window=60.0, backoff_first=0.05, backoff_max=0.5)

HostMaker = Callable[..., Awaitable[WorkerHost]]


def node_spec(table: Mapping[str, Any], transport: str) -> dict[str, Any]:
    """A worker-mode table whose workers are the Node runtime (its command ends with it)."""
    spec = {"mode": "worker", "command": [NODE or "node", str(NODE_DIR / "bin/pns-worker.js")],
            "pythonpath": [str(NODE_DIR / "examples")], **table}
    if transport == "stdio":
        spec["transport"] = "stdio"
    return spec


@pytest.fixture(params=["zmq", "stdio"])
def transport(request: pytest.FixtureRequest) -> str:
    if NODE is None:
        pytest.skip("node is not installed")
    if not (NODE_DIR / "node_modules" / "zeromq").is_dir():
        pytest.skip("workers/node has no node_modules: run `make node-worker` (npm ci)")
    return str(request.param)


def test_the_node_runtime_passes_the_protocol_vectors() -> None:
    """workers/node/test: protocols/vectors and the stdio vectors, in node."""
    if NODE is None:
        pytest.skip("node is not installed")
    if not (NODE_DIR / "node_modules" / "@msgpack").is_dir():
        pytest.skip("workers/node has no node_modules: run `make node-worker` (npm ci)")
    done = subprocess.run([NODE, "--test", "test/"], cwd=NODE_DIR, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.MULTILINE)
    assert "# fail 0" in done.stdout and passed and int(passed.group(1)) >= 20


@pytest.fixture
async def make_host(tmp_path: Path, transport: str) -> AsyncIterator[HostMaker]:
    context = zmq.Context()
    hosts: list[WorkerHost] = []

    async def make(table: Mapping[str, Any], tuning: WorkerTuning = FAST) -> WorkerHost:
        host = WorkerHost(parse_spec("n", node_spec(table, transport)), context=context,
                          run_dir=tmp_path / "run", key=KEY, tuning=tuning)
        hosts.append(host)
        await host.start()
        return host

    try:
        yield make
    finally:
        for host in hosts:
            await host.stop(grace=1.0)
        context.term()


class Watch:
    """A RunContext whose first progress message (the worker's pid) can be awaited."""

    def __init__(self) -> None:
        self.first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.progress: list[tuple[int, str]] = []
        self.lines: list[str] = []
        self.ctx = RunContext("job-1", self._on_progress, self.lines.append)

    def _on_progress(self, percent: int, message: str) -> None:
        self.progress.append((percent, message))
        if not self.first.done():
            self.first.set_result(message)

    async def pid(self) -> int:
        return int(await asyncio.wait_for(self.first, 20))


async def test_echo_hooks_and_hello_on_node_workers(make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsdemo:echo", "init": "ptsdemo:init", "workers": 2})
    details = host.state().details
    assert host.state().state == "ready" and len(details["pids"]) == 2
    assert all(w["python"].startswith("node v") for w in details["each"])
    data = {"b": b"\x00\x01" * 50_000, "s": "text", "n": [1, 2.5, None, True]}   # a blob frame
    assert await host.run(data, timeout=10, ctx=RunContext()) == data
    assert await host.hook("init", timeout=10) == "hello initialised"
    assert await host.hook("clean", timeout=10) is None       # no entry for it: nil


async def test_progress_and_log_lines_reach_the_run_context(make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsdemo:hello"})
    watch = Watch()
    assert (await host.run({"theName": "Ann"}, timeout=10, ctx=watch.ctx)).startswith(
        "hello Ann! From node v")
    assert watch.lines == ["greeting Ann"]
    slow = await make_host({"entry": "ptsdemo:slowPid"})
    watch = Watch()
    pid = await slow.run(0.2, timeout=10, ctx=watch.ctx)
    assert watch.progress == [(1, str(pid)), (100, "done")]
    odd = await make_host({"entry": "ptsdemo:badProgress"})
    watch = Watch()
    assert await odd.run({"x": 1}, timeout=10, ctx=watch.ctx) == {"x": 1}
    assert watch.progress == [] and watch.lines == ["progress ignored: NaN is not a finite number"]


async def test_stdout_of_pts_code_and_many_log_lines_keep_the_stream_whole(
        make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsdemo:chatty"})
    watch = Watch()
    assert await host.run(500, timeout=20, ctx=watch.ctx) == 500
    assert watch.lines == [f"line {i}" for i in range(500)]
    assert await host.run(0, timeout=20, ctx=RunContext()) == 0


async def test_a_failing_run_and_an_unsendable_result_answer_pts_error(
        make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsdemo:fail"})
    with pytest.raises(PtsFailed, match=r'TypeError: bad input \{"a":1\}'):
        await host.run({"a": 1}, timeout=10, ctx=RunContext())
    other = await make_host({"entry": "ptsdemo:unencodable"})
    with pytest.raises(PtsFailed, match="cannot be encoded"):
        await other.run(None, timeout=10, ctx=RunContext())
    pid = other.state().details["pids"][0]
    with pytest.raises(PtsFailed):                            # the same worker goes on serving
        await other.run(None, timeout=10, ctx=RunContext())
    assert other.state().details["pids"] == [pid]


async def test_a_cancelled_cooperative_run_keeps_its_worker_after_a_timeout(
        make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsdemo:slowPid"})
    pid = host.state().details["pids"][0]
    with pytest.raises(RunTimeout):
        await host.run(30, timeout=0.3, ctx=RunContext())
    assert await host.run(0, timeout=20, ctx=RunContext()) == pid


async def test_a_cancelled_stubborn_run_returns_at_once_and_the_worker_is_replaced(
        make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsdemo:stubborn"})
    watch = Watch()
    run = asyncio.create_task(host.run(60, timeout=60, ctx=watch.ctx))
    victim = await watch.pid()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, 2)
    await until(lambda: not alive(victim))
    assert await host.run(0, timeout=20, ctx=RunContext()) == "finished"


async def test_a_crash_fails_the_run_and_a_new_worker_serves(make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsdemo:crash"})
    first = host.state().details["pids"][0]
    with pytest.raises(WorkerDied, match="exit code 7"):
        await host.run(None, timeout=20, ctx=RunContext())
    await until(lambda: host.state().details["ready"] == 1)
    assert host.state().details["pids"] != [first]
    assert host.state().details["restarts"] == 1


async def test_a_hung_worker_is_found_by_heartbeat_and_replaced(make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsdemo:hang"})
    watch = Watch()
    run = asyncio.create_task(host.run(None, timeout=60, ctx=watch.ctx))
    victim = await watch.pid()
    with pytest.raises(WorkerDied, match="no heartbeat"):
        await asyncio.wait_for(run, 10)
    await until(lambda: not alive(victim) and host.state().state == "ready")
    assert victim not in host.state().details["pids"]


async def test_a_sigkilled_worker_fails_its_run_with_the_signal(make_host: HostMaker) -> None:
    host = await make_host({"entry": "ptsdemo:slowPid"})
    watch = Watch()
    run = asyncio.create_task(host.run(30, timeout=60, ctx=watch.ctx))
    victim = await watch.pid()
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerDied, match="killed by signal SIGKILL"):
        await asyncio.wait_for(run, 10)
    assert await host.run(0, timeout=20, ctx=RunContext()) != victim


async def test_a_missing_entry_fails_start_with_exit_code_3_and_the_module(
        make_host: HostMaker) -> None:
    with pytest.raises(InvalidSpec) as caught:
        await make_host({"entry": "no_such_module_xyz:run"})
    assert "exit code 3" in caught.value.message
    assert "no module named 'no_such_module_xyz'" in caught.value.message


def test_a_pnsd_process_serves_a_node_pts_over_the_wire(tmp_path: Path, transport: str) -> None:
    """End to end: a config file's worker PTS on Node, a client's run through the daemon."""
    spec = node_spec({"entry": "ptsdemo:hello", "workers": 2}, transport)
    table = "".join(f"{key} = {json.dumps(value)}\n" for key, value in spec.items())
    daemon = spawn_daemon(tmp_path / "home", f"\n[pts.js]\n{table}")
    try:
        with daemon.client() as client:
            result = client.call("run", {"pts": "js", "input": {"theName": "Eve"}})
            status = client.call("status", {})["pts"]["js"]
    finally:
        assert daemon.terminate() == 0
    assert result["result"].startswith("hello Eve! From node v")
    assert status["ready"] == 2 and all(w["python"].startswith("node v") for w in status["each"])


@pytest.fixture
async def bare_worker(tmp_path: Path) -> AsyncIterator[tuple[Any, asyncio.subprocess.Process]]:
    """The Node runtime alone on a ROUTER of this test's (no pnsd): the daemon's side by hand."""
    if NODE is None or not (NODE_DIR / "node_modules" / "zeromq").is_dir():
        pytest.skip("node or workers/node's node_modules (make node-worker) is missing")
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    endpoint = f"ipc://{tmp_path}/w.sock"
    context = zmq.asyncio.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    worker = await asyncio.create_subprocess_exec(
        NODE, str(NODE_DIR / "bin/pns-worker.js"), "--connect", endpoint, "--entry",
        "ptsdemo:slowPid", "--key-file", str(key_file), "--id", "n1", "--heartbeat", "0.2",
        env={**os.environ, "PYTHONPATH": str(NODE_DIR / "examples")},
        stderr=asyncio.subprocess.PIPE)
    try:
        yield router, worker
    finally:
        if worker.returncode is None:
            worker.kill()
        await worker.wait()
        router.close()
        context.term()


async def test_the_node_runtime_drops_bad_frames_and_answers_by_the_rules(
        bare_worker: tuple[Any, asyncio.subprocess.Process]) -> None:
    router, worker = bare_worker
    codec = Codec(KEY)

    async def next_message(*skip: str) -> Any:
        while True:
            identity, *frames = await asyncio.wait_for(router.recv_multipart(), 20)
            assert identity == b"n1"
            message = codec.decode(frames)
            if message.type not in skip:
                return message

    hello = await next_message()
    assert hello.type == "worker.hello" and hello.body["protocols"] == [1, 2]
    task = codec.encode("task.req", {"op": "run", "data": 0.5, "timeout": 10, "job": None})
    for junk in ([b"garbage"], Codec(b"another key").encode("task.req", {"op": "run"}), task):
        await router.send_multipart([b"n1", *junk])
    await router.send_multipart([b"n1", *task])                       # a replay: dropped
    other = codec.encode("task.req", {"op": "run", "data": 0, "timeout": 10, "job": None})
    await router.send_multipart([b"n1", *other])                      # while busy
    busy = await next_message("worker.heartbeat", "task.progress")
    assert (busy.type, busy.re, busy.body["code"]) == ("error", codec.decode(other).id, "busy")
    answer = await next_message("worker.heartbeat", "task.progress")
    assert answer.type == "task.rep" and answer.body["result"] == worker.pid
    odd = codec.encode("task.req", {"op": "explode", "data": None, "timeout": 1, "job": None})
    await router.send_multipart([b"n1", *odd])
    refused = await next_message("worker.heartbeat")
    assert refused.body["code"] == "bad_request"
    await router.send_multipart([b"n1", *codec.encode("worker.stop", {})])
    assert await asyncio.wait_for(worker.wait(), 20) == 0
    assert worker.stderr is not None
    log = (await worker.stderr.read()).decode()
    assert "dropped a message: malformed" in log and "dropped a message: auth" in log
    assert "dropped a message: replay" in log


@pytest.mark.parametrize(("args", "code", "says"), [
    (["--connect", "ipc:///nowhere", "--entry", "ptsdemo:echo"], 2, "--key-file is required"),
    (["--bogus", "1"], 2, "bad option --bogus"),
    (["--connect", "ipc:///nowhere", "--entry", "ptsdemo:echo", "--key-file", "/no/such/key"],
     3, "cannot read the key file"),
    (["--connect", "ipc:///nowhere", "--entry", "ptsdemo:nothing", "--key-file", "/dev/null"],
     3, "has no function 'nothing'"),
    (["--connect", "ipc:///nowhere", "--entry", "ptsdemo:echo", "--init", "ptsdemo:fail",
      "--key-file", "/dev/null"], 4, "the init hook failed"),
])
def test_the_node_runtime_exits_with_the_documented_codes(args: list[str], code: int,
                                                          says: str) -> None:
    if NODE is None or not (NODE_DIR / "node_modules" / "zeromq").is_dir():
        pytest.skip("node or workers/node's node_modules (make node-worker) is missing")
    done = subprocess.run([NODE, str(NODE_DIR / "bin/pns-worker.js"), "-m", "protocols.worker",
                           *args], capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(NODE_DIR / "examples")})
    assert (done.returncode, says in done.stderr) == (code, True), done.stderr
