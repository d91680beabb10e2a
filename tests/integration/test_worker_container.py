"""Worker-mode PTS whose workers run in containers (podman), supervised by pnsd's worker host.

The image is made here from nothing (no registry is needed): an empty root with the usual
symlinks, imported with ``podman import``; the host's ``/usr``, the daemon's venv and its
interpreter are mounted read-only, so the workers run the daemon's Python with its pyzmq.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import zmq
from structlog.testing import capture_logs

from pnsd.errors import RunTimeout, Unavailable
from pnsd.hosts.worker import WorkerHost
from pnsd.hosts.workerslot import WorkerTuning
from pnsd.spec import parse_spec
from protocols.context import RunContext
from tests.waiting import until

pytestmark = pytest.mark.slow

IMAGE = "localhost/pns-test-root:1"
NODE_DIR = Path(__file__).resolve().parents[2] / "workers" / "node"
NODE = shutil.which("node")
HAS_NODE_MODULES = (NODE_DIR / "node_modules" / "zeromq").is_dir()
KEY = b"container-test-key"
TUNING = WorkerTuning(heartbeat=0.5, missed_beats=6, start_timeout=60.0, cancel_grace=1.0,
                      backoff_first=0.05, backoff_max=0.5)
# rlimits the runtime may set without CAP_SYS_RESOURCE (it refuses to raise the host's own)
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
PYTHON_DIRS = dict.fromkeys([sys.prefix, sys.base_prefix])     # the venv and its interpreter
BASE_OPTIONS = ["-v", "/usr:/usr:ro", *(f"-v={d}:{d}:ro" for d in PYTHON_DIRS),
                "--network", "none", *LIMITS]

PTS_MODULE = '''
import os, sys, time

def where(data, ctx):
    ctx.log("in a container: %s" % os.path.exists("/run/.containerenv"))
    return {"data": data, "python": list(sys.version_info[:2]),
            "container": os.path.exists("/run/.containerenv")}

def stubborn(seconds):
    time.sleep(seconds)          # ignores cancel and worker.stop
    return "finished"
'''


def make_image(podman: str) -> None:
    """An image holding only an empty root with the merged-/usr symlinks."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("usr", "tmp", "etc", "proc", "dev", "sys", "run"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        for link in ("bin", "lib", "lib64", "sbin"):
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, f"usr/{link}"
            tar.addfile(info)
    subprocess.run([podman, "import", "-", IMAGE], input=buffer.getvalue(),
                   capture_output=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def runtime() -> list[str]:
    """A podman command line that can run containers here, or a skip saying what blocks it."""
    podman = shutil.which("podman")
    if podman is None:
        pytest.skip("podman is not installed (apt-get install podman)")
    make_image(podman)
    tried = []
    candidates = [[podman]] + ([[podman, "--runtime", runc]] if (runc := shutil.which("runc"))
                               else [])
    for command in candidates:
        done = subprocess.run([*command, "run", "--rm", *BASE_OPTIONS, IMAGE, "/usr/bin/true"],
                              capture_output=True, text=True, timeout=120, check=False)
        if done.returncode == 0:
            return command
        tried.append(f"{' '.join(command)}: {done.stderr.strip()[-200:]}")
    pytest.skip("no container runtime can run containers here: " + " | ".join(tried))


def containers(runtime: list[str], prefix: str) -> list[str]:
    done = subprocess.run([*runtime, "ps", "-a", "--format", "{{.Names}}"], capture_output=True,
                          text=True, timeout=60, check=True)
    return [name for name in done.stdout.split() if name.startswith(prefix)]


HostMaker = Callable[..., Awaitable[WorkerHost]]


@pytest.fixture
async def make_host(tmp_path: Path, runtime: list[str]) -> AsyncIterator[HostMaker]:
    (tmp_path / "cpts.py").write_text(PTS_MODULE)
    context = zmq.Context()
    hosts: list[WorkerHost] = []

    async def make(table: Mapping[str, Any]) -> WorkerHost:
        spec = parse_spec("ctr", {
            "mode": "worker", "pythonpath": [str(tmp_path)], "python": sys.executable,
            "container": {"runtime": runtime, "image": IMAGE, "options": BASE_OPTIONS},
            **table})
        host = WorkerHost(spec, context=context, run_dir=tmp_path / "run", key=KEY,
                          tuning=TUNING)
        hosts.append(host)
        await host.start()
        return host

    try:
        yield make
    finally:
        for host in hosts:
            await host.stop(grace=1.0)
        context.term()
        assert containers(runtime, "pns-ctr-") == []


async def test_a_worker_in_a_container_serves_runs(make_host: HostMaker,
                                                  runtime: list[str]) -> None:
    host = await make_host({"entry": "cpts:where", "workers": 2})
    assert len(containers(runtime, "pns-ctr-")) == 2
    lines: list[str] = []
    result = await host.run({"b": b"\x01" * 100_000}, timeout=30,
                            ctx=RunContext("j", None, lines.append))
    assert result["container"] is True and result["data"] == {"b": b"\x01" * 100_000}
    assert lines == ["in a container: True"]


async def test_a_stdio_worker_in_a_container_gets_the_pipes(make_host: HostMaker) -> None:
    host = await make_host({"entry": "cpts:where", "transport": "stdio"})
    result = await host.run([1, "two"], timeout=30, ctx=RunContext())
    assert result["container"] is True and result["data"] == [1, "two"]


async def test_a_node_worker_runs_in_a_container(make_host: HostMaker,
                                                 runtime: list[str]) -> None:
    node_dir, node = NODE_DIR, NODE
    if node is None or not HAS_NODE_MODULES:
        pytest.skip("node or workers/node's node_modules (make node-worker) is missing")
    if not node.startswith("/usr/"):
        pytest.skip(f"node ({node}) is not under /usr, which the test image mounts")
    host = await make_host({
        "entry": "ptsdemo:echo", "python": "", "pythonpath": [str(node_dir / "examples")],
        "command": [node, str(node_dir / "bin/pns-worker.js")],
        "container": {"runtime": runtime, "image": IMAGE,
                      "options": [*BASE_OPTIONS, "-v", f"{node_dir}:{node_dir}:ro"]}})
    assert host.state().details["each"][0]["python"].startswith("node v")
    assert await host.run({"b": b"\x02" * 70_000}, timeout=30, ctx=RunContext()) == {
        "b": b"\x02" * 70_000}


async def test_a_timed_out_run_kills_the_container_and_a_new_one_serves(
        make_host: HostMaker, runtime: list[str]) -> None:
    host = await make_host({"entry": "cpts:stubborn"})
    first = containers(runtime, "pns-ctr-")
    with pytest.raises(RunTimeout):
        await host.run(60, timeout=1.0, ctx=RunContext())
    await until(lambda: first[0] not in containers(runtime, "pns-ctr-"), timeout=30)
    await until(lambda: host.state().state == "ready", timeout=30)
    assert await host.run(0, timeout=30, ctx=RunContext()) == "finished"


async def test_stop_uses_the_runtimes_stop_on_a_busy_container(
        make_host: HostMaker, runtime: list[str]) -> None:
    host = await make_host({"entry": "cpts:stubborn"})
    running = asyncio.create_task(host.run(120, timeout=120, ctx=RunContext()))
    await until(lambda: host.state().details["busy"] == 1, timeout=30)
    with capture_logs() as logs:
        await host.stop(grace=1.0)          # worker.stop is not heard: the ladder runs
    with pytest.raises(Exception, match="stopped"):
        await running
    stops = [e for e in logs if e["event"] == "container_stop"]
    assert len(stops) == 1 and stops[0]["name"].startswith("pns-ctr-")
    assert containers(runtime, "pns-ctr-") == []


async def test_an_image_that_is_not_there_fails_start_clearly(make_host: HostMaker,
                                                             runtime: list[str]) -> None:
    with pytest.raises(Unavailable) as caught:
        await make_host({"entry": "cpts:where", "container": {
            "image": "localhost/no-such-image:0", "runtime": runtime,
            "options": ["--pull", "never", *BASE_OPTIONS]}})
    message = caught.value.message
    assert "worker failed to start: exit code 125" in message
    assert "localhost/no-such-image:0" in message


def start_stray(runtime: list[str], name: str, labels: Mapping[str, str]) -> None:
    """A container started behind pnsd's back (as a dead daemon or a lost kill leaves one)."""
    flags = [part for key, value in labels.items() for part in ("--label", f"{key}={value}")]
    subprocess.run([*runtime, "run", "-d", "--rm", "--name", name, *flags, *BASE_OPTIONS, IMAGE,
                    "/usr/bin/sleep", "300"], capture_output=True, timeout=120, check=True)


async def test_containers_of_a_dead_daemon_go_and_a_generation_leaves_none(
        make_host: HostMaker, runtime: list[str], tmp_path: Path) -> None:
    run_dir = (tmp_path / "run").resolve()
    start_stray(runtime, "pns-ctr-dead-w0.1", {"pns.run": str(run_dir), "pns.daemon": "gone"})
    host = await make_host({"entry": "cpts:where"})
    names = containers(runtime, "pns-ctr-")
    assert "pns-ctr-dead-w0.1" not in names and len(names) == 1      # only the new worker
    token = host._launch.token
    start_stray(runtime, f"pns-ctr-{token}-lost", {"pns.generation": token})
    await host.stop(grace=1.0)
    assert containers(runtime, "pns-ctr-") == []
