"""Remote workers and clients over tcp:// with real CURVE: joins, refusals, heartbeats, rejoins.

A real daemon serves in this test's loop with its TCP endpoints on free ports; remote workers
are real ``python -m protocols.worker`` processes with keys made by ``pnsd keys``' code.
"""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from pnsd.curve import new_key_pair
from pnsd.daemon import Daemon
from pnsd.errors import ConfigError
from pnsd.hosts.workerslot import WorkerTuning
from protocols import messages
from protocols.client import AsyncClient
from protocols.codec import Codec, new_message_id
from protocols.errors import ErrorCode, RemoteError
from protocols.membership import EXIT_REFUSED, load_keys, secure_client
from tests.integration.conftest import settings_for
from tests.integration.test_worker_foreign_python import PTS_MODULE, old_python  # noqa: F401
from tests.waiting import until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BEAT = 0.2
TUNING = WorkerTuning(heartbeat=BEAT, missed_beats=3, start_timeout=20.0, cancel_grace=0.5)
WAIT = 20.0

CONFIG = """demo = false
tcp_endpoint = "tcp://127.0.0.1:0"
worker_endpoint = "tcp://127.0.0.1:0"

[pts.far]
mode = "worker"
entry = "tests.integration.test_remote_workers:nap"
workers = 0
remote_workers = 2
timeout = 20

[pts.again]
mode = "worker"
entry = "tests.integration.test_remote_workers:nap"
workers = 0
remote_workers = 2
idempotent = true
timeout = 20

[pts.near]
mode = "worker"
entry = "tests.integration.test_remote_workers:nap"
workers = 1
"""


def nap(data: Any, ctx: Any) -> Any:
    """Sleep ``data["sleep"]`` seconds (0 if absent); answer the input and this worker's pid."""
    import time  # noqa: PLC0415 - runs in the worker

    ctx.progress(1, str(os.getpid()))
    time.sleep(float(data.get("sleep", 0)) if isinstance(data, dict) else 0)
    return {"input": data, "pid": os.getpid()}


@dataclass
class Node:
    daemon: Daemon
    home: Path
    keys: Path
    key: bytes
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def curve(self) -> Path:
        return self.home / "curve"

    @property
    def worker_endpoint(self) -> str:
        assert self.daemon.gate is not None
        return self.daemon.gate.endpoint

    @property
    def tcp_endpoint(self) -> str:
        assert self.daemon.tcp_server is not None
        return self.daemon.tcp_server.bound[0]

    def client(self) -> AsyncClient:
        return AsyncClient(self.daemon.settings.endpoint, key=self.key, timeout=WAIT)

    def pair(self, name: str, role: str = "workers") -> Path:
        """A new authorised key pair; returns its secret key file."""
        return new_key_pair(self.curve, name, role=role, out=self.keys)[1]

    async def worker(self, pts: str, secret: Path, *, server_key: Path | None = None,
                     config_file: bool = False, python: str = sys.executable,
                     entry: str = "tests.integration.test_remote_workers:nap",
                     path: str = str(ROOT), key_file: Path | None = None,
                     ) -> asyncio.subprocess.Process:
        options = {"connect": self.worker_endpoint, "pts": pts, "entry": entry,
                   "key-file": str(key_file or self.daemon.settings.key_file),
                   "server-key": str(server_key or self.curve / "server.key"),
                   "key": str(secret), "heartbeat": str(BEAT)}
        if config_file:     # the same options from an INI file
            ini = self.keys / f"{pts}-{len(self.procs)}.ini"
            ini.write_text("[worker]\n" + "".join(f"{k} = {v}\n" for k, v in options.items()))
            argv = ["--config-file", str(ini)]
        else:
            argv = [item for key, value in options.items() for item in (f"--{key}", value)]
        proc = await asyncio.create_subprocess_exec(
            python, "-m", "protocols.worker", *argv, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": path}, stderr=asyncio.subprocess.PIPE)
        self.procs.append(proc)
        return proc

    async def status(self, pts: str | None = None) -> Any:
        async with self.client() as client:
            reply = await client.call("status")
        return reply["pts"][pts] if pts else reply

    async def joined(self, pts: str, count: int) -> None:
        async def check() -> bool:
            """the remote workers have joined"""
            return bool((await self.status(pts))["remote"] == count)
        await until(check, timeout=WAIT, every=0.05)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    settings = settings_for(tmp_path / "home", CONFIG)
    daemon = Daemon(settings, worker_tuning=TUNING)
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), timeout=30)
    key = settings.key_file.read_bytes().strip()
    made = Node(daemon, settings.home, tmp_path / "keys", key)
    try:
        yield made
    finally:
        for proc in made.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
            await asyncio.wait_for(proc.wait(), timeout=10)
        daemon.stopping.set()
        await asyncio.wait_for(task, timeout=60)


async def outcome(client: AsyncClient, job: str) -> Any:
    """A job's result once it finished (its error raised as RemoteError)."""
    async def finished() -> bool:
        """the job finished"""
        record = (await client.call("job.status", {"job": job}))["job"]
        return record["status"] not in ("accepted", "running")
    await until(finished, timeout=WAIT, every=0.05)
    return (await client.result(job))["result"]


async def refused_line(proc: asyncio.subprocess.Process) -> str:
    """Wait for a refused worker to exit 6; its stderr."""
    assert proc.stderr is not None
    stderr = await asyncio.wait_for(proc.stderr.read(), timeout=WAIT)
    assert await proc.wait() == EXIT_REFUSED
    return stderr.decode()


async def test_a_remote_worker_joins_over_curve_and_serves_like_a_local_one(
        node: Node) -> None:
    await node.worker("far", node.pair("w1"), config_file=True)
    await node.joined("far", 1)
    async with node.client() as client:
        reply = await client.call("run", {"pts": "far", "input": {"n": 1}})
        job = await client.call("submit", {"pts": "far", "input": {"n": 2}})
        result = await outcome(client, job["job"]["id"])
    assert reply["result"]["input"] == {"n": 1}
    assert result["input"] == {"n": 2}
    each = (await node.status("far"))["each"]
    assert [(w["where"], w["served"], w["ready"]) for w in each] == [
        (platform.node(), 2, True)]
    near = (await node.status("near"))["each"]
    assert [w["where"] for w in near] == ["local"]


async def test_a_client_with_curve_keys_reaches_the_daemon_over_tcp(node: Node) -> None:
    keys = load_keys(str(node.curve / "server.key"), str(node.pair("c1", "clients")))
    async with AsyncClient(node.tcp_endpoint, key=node.key, curve=keys, timeout=WAIT) as client:
        reply = await client.call("run", {"pts": "near", "input": {"tcp": True}})
    assert reply["result"]["input"] == {"tcp": True}


async def test_a_client_with_the_wrong_server_key_or_no_curve_is_refused_and_counted(
        node: Node, tmp_path: Path) -> None:
    stranger = new_key_pair(tmp_path / "other", "s", role="clients", out=tmp_path / "o")[0]
    wrong = load_keys(str(stranger), str(node.pair("c2", "clients")))
    async with AsyncClient(node.tcp_endpoint, key=node.key, curve=wrong, timeout=5) as client:
        with pytest.raises(RemoteError) as refused:
            await client.call("ping")
    assert refused.value.code == ErrorCode.AUTH
    assert "server key" in refused.value.message
    async with AsyncClient(node.tcp_endpoint, key=node.key, timeout=5) as plain:
        with pytest.raises(RemoteError) as plain_refused:
            await plain.call("ping")
    assert plain_refused.value.code == ErrorCode.UNAVAILABLE
    async def counted() -> bool:
        """both failed handshakes are counted"""
        return bool((await node.status())["refusals"]["refused"].get("curve_handshake", 0) >= 2)
    await until(counted, timeout=WAIT, every=0.05)


async def test_a_worker_key_is_no_client_key_and_an_unknown_key_is_refused(
        node: Node, tmp_path: Path) -> None:
    worker_keys = load_keys(str(node.curve / "server.key"), str(node.pair("w2")))
    async with AsyncClient(node.tcp_endpoint, key=node.key, curve=worker_keys,
                           timeout=5) as client:
        with pytest.raises(RemoteError) as refused:
            await client.call("ping")
    assert refused.value.code == ErrorCode.AUTH
    assert "refused this client's CURVE key" in refused.value.message
    async with node.client() as client:        # waits for a worker: must not be lost
        job = (await client.call("submit", {"pts": "far", "input": {"kept": 1}}))["job"]
        stranger = new_key_pair(tmp_path / "other", "x", role="workers", out=tmp_path / "o")
        line = await refused_line(await node.worker("far", stranger[1]))
        assert "refused this worker's CURVE key" in line
        assert (await node.status())["refusals"]["refused"]["curve_key"] == 2
        await node.worker("far", node.pair("w3"))
        assert (await outcome(client, job["id"]))["input"] == {"kept": 1}


async def test_a_remote_worker_with_another_signing_key_is_told_and_refused(
        node: Node, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    other.write_text("ab" * 32)
    other.chmod(0o600)
    line = await refused_line(await node.worker("far", node.pair("w10"), key_file=other))
    assert "refused to join PTS far: auth:" in line and "--key-file" in line
    assert (await node.status())["refusals"]["refused"]["auth"] >= 1
    assert (await node.status("far"))["remote"] == 0


async def test_a_remote_worker_for_a_pts_without_remote_workers_is_refused(
        node: Node) -> None:
    line = await refused_line(await node.worker("near", node.pair("w4")))
    assert "refused to join PTS near: forbidden: PTS near does not take remote workers" in line
    line = await refused_line(await node.worker("nosuch", node.pair("w5")))
    assert "not_found" in line
    assert (await node.status())["refusals"]["refused"]["worker_join"] == 2
    near = await node.status("near")
    assert near["remote"] == 0 and near["ready"] == 1


async def test_a_remote_worker_speaking_none_of_the_daemons_versions_is_refused_with_both(
        node: Node) -> None:
    """The versioned hello holds over tcp:// too: the gate answers the hello, nothing joins."""
    keys = load_keys(str(node.curve / "server.key"), str(node.pair("w9")))
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.DEALER)
    try:
        secure_client(socket, keys)
        socket.connect(node.worker_endpoint)
        codec, hello_id = Codec(node.key), new_message_id()
        hello = {"pid": 1, "id": "", "entry": "m:f", "hooks": [], "python": "9.9",
                 "capabilities": [], "protocols": [7, 9], "pts": "far", "host": "elsewhere"}
        await socket.send_multipart(codec.encode(messages.WORKER_HELLO, hello, msg_id=hello_id))
        reply = codec.decode(await asyncio.wait_for(socket.recv_multipart(), timeout=WAIT))
    finally:
        socket.close(linger=0)
        context.term()
    assert (reply.type, reply.re, reply.body["code"]) == (messages.ERROR, hello_id, "version")
    assert "worker speaks protocol 7-9" in reply.body["message"]
    assert (await node.status("far"))["remote"] == 0
    assert (await node.status())["refusals"]["refused"]["worker_join"] == 1


async def test_a_silent_remote_worker_fails_its_run_with_the_reason_and_rejoins(
        node: Node) -> None:
    proc = await node.worker("far", node.pair("w6"))
    await node.joined("far", 1)
    async with node.client() as client:
        job = (await client.call("submit", {"pts": "far", "input": {"sleep": 2}}))["job"]

        async def running() -> bool:
            """the run is on the worker"""
            return bool((await node.status("far"))["busy"] == 1)
        await until(running, timeout=WAIT, every=0.02)
        proc.send_signal(signal.SIGSTOP)
        with pytest.raises(RemoteError) as failed:
            await outcome(client, job["id"])
        assert failed.value.code == ErrorCode.WORKER_DIED
        assert "no heartbeat" in failed.value.message
        assert (await node.status("far"))["remote"] == 0
        proc.send_signal(signal.SIGCONT)      # it hears worker.stop, then joins again
        await node.joined("far", 1)
        reply = await client.call("run", {"pts": "far", "input": {"after": 1}})
    assert reply["result"] == {"input": {"after": 1}, "pid": proc.pid}


async def test_an_idempotent_pts_hands_a_lost_remote_workers_run_to_another(
        node: Node) -> None:
    first = await node.worker("again", node.pair("w7"))
    second = await node.worker("again", node.pair("w8"))
    await node.joined("again", 2)
    async with node.client() as client:
        job = (await client.call("submit", {"pts": "again", "input": {"sleep": 1}}))["job"]

        async def busy_pid() -> bool:
            """the run is on one of the workers"""
            return any(w["busy"] for w in (await node.status("again"))["each"])
        await until(busy_pid, timeout=WAIT, every=0.02)
        each = (await node.status("again"))["each"]
        stuck = next(w["pid"] for w in each if w["busy"])
        (first if first.pid == stuck else second).send_signal(signal.SIGSTOP)
        result = await outcome(client, job["id"])
    assert result["input"] == {"sleep": 1}
    assert result["pid"] != stuck and result["pid"] in (first.pid, second.pid)


async def test_after_a_hot_swap_a_remote_worker_joins_the_new_version(node: Node) -> None:
    spec = {"mode": "worker", "entry": "tests.integration.test_remote_workers:nap",
            "workers": 0, "remote_workers": 1, "version": "v1"}
    async with node.client() as client:
        await client.call("pts.deploy", {"name": "swapped", "spec": spec})
        proc = await node.worker("swapped", node.pair("w9"))
        await node.joined("swapped", 1)
        await client.call("pts.replace", {"name": "swapped", "spec": {**spec, "version": "v2"}})

        async def rejoined() -> bool:
            """the worker joined the new generation"""
            state = await node.status("swapped")
            return bool(state["version"] == "v2" and state["remote"] == 1)
        await until(rejoined, timeout=WAIT, every=0.05)
        reply = await client.call("run", {"pts": "swapped", "input": {"v": 2}})
    assert reply["result"] == {"input": {"v": 2}, "pid": proc.pid}
    assert proc.returncode is None


@pytest.mark.timeout(300)
async def test_a_remote_worker_runs_under_an_older_python_with_only_pyzmq_and_msgpack(
        node: Node, tmp_path: Path,
        old_python: tuple[tuple[int, int], Path]) -> None:  # noqa: F811 - the fixture above
    version, python = old_python
    lib = tmp_path / "lib"       # only `protocols` and the PTS: nothing of the daemon's
    lib.mkdir()
    (lib / "protocols").symlink_to(ROOT / "protocols", target_is_directory=True)
    (lib / "oldpts.py").write_text(PTS_MODULE)
    await node.worker("far", node.pair("old"), python=str(python), entry="oldpts:version",
                      path=str(lib))
    await node.joined("far", 1)
    async with node.client() as client:
        reply = await client.call("run", {"pts": "far", "input": None})
    assert reply["result"] == list(version) != list(sys.version_info[:2])


async def test_plain_tcp_serves_only_when_configured_insecure_and_a_busy_port_is_a_clear_error(
        tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", 'demo = true\ntcp_endpoint = "tcp://127.0.0.1:0"\n'
                                               "tcp_insecure = true\n")
    daemon = Daemon(settings)
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), timeout=30)
        assert daemon.guard is None and daemon.tcp_server is not None
        endpoint = daemon.tcp_server.bound[0]
        key = settings.key_file.read_bytes().strip()
        async with AsyncClient(endpoint, key=key, timeout=WAIT) as client:
            assert (await client.call("run", {"pts": "echo", "input": 7}))["result"] == 7
        taken = settings_for(tmp_path / "other", f'demo = false\ntcp_endpoint = "{endpoint}"\n')
        with pytest.raises(ConfigError, match=f"cannot listen on {endpoint}: Address already"):
            await asyncio.wait_for(Daemon(taken).run(), timeout=30)
    finally:
        daemon.stopping.set()
        await asyncio.wait_for(task, timeout=60)
