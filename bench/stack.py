"""The processes under test and the load agent: started on demand, all stopped at the end.

Owns where everything lives (one short temporary directory, so ipc:// paths stay far below
the 107-byte limit), how each service is started and known to be ready, and the load
:class:`Agent`. :class:`Stack` is a context manager: leaving it stops every process it started,
on every path out (SIGTERM, grace, SIGKILL on each process group; pnsd's workers, which live in
groups of their own, by pid).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.postgres import PgServer
from harness.procs import (
    PYTHON,
    ROOT,
    Child,
    CpuTrees,
    child_env,
    children,
    free_port,
    http_ready,
    ipc_ready,
    rss_bytes,
    wait_until,
)

START_TIMEOUT = 60.0


def rss_mb(pid: int) -> float | None:
    """Resident set size in MB (10^6 bytes), or None if the process is gone."""
    value = rss_bytes(pid)
    return None if value is None else value / 1e6


# services that serve from child processes: their RSS is that of the parent and its children
# (pnsweb: one per core; shared pages are counted once per process, as RSS always does)
TREE_RSS = frozenset({"pnsweb"})


def service_rss_mb(name: str, pid: int) -> float | None:
    if name not in TREE_RSS:
        return rss_mb(pid)
    own = rss_mb(pid)
    if own is None:
        return None
    return own + sum(v for v in (rss_mb(child) for child in children(pid)) if v is not None)


RUN_PTS = ROOT / "pnsd" / "demo" / "scripts" / "runPTS"
WEB_USER = "bench"


@dataclass
class Service:
    name: str
    child: Child
    endpoint: str = ""          # ipc:// endpoint of a ZeroMQ service
    port: int = 0               # TCP port of an HTTP service
    key: str = ""               # hex of the signing key (pnsd)
    home: Path | None = None    # pnsd's home
    config: Path | None = None
    rss_start: float | None = None   # MB, settled after start, before any load
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.child.pid


class Agent:
    """The load process: one JSON command in, one JSON answer out, within a deadline."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def _start(self) -> subprocess.Popen[bytes]:
        with (self.tmp / "agent.log").open("ab") as log:
            return subprocess.Popen([PYTHON, "-m", "bench.agent"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=log, env=child_env(),
                                    cwd=ROOT, start_new_session=True)

    def call(self, command: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """Run one load; an agent that died before answering is restarted and asked again."""
        for attempt in (1, 2):
            if self.process is None or self.process.poll() is not None:
                self.process = self._start()
            assert self.process.stdin is not None and self.process.stdout is not None
            try:
                self.process.stdin.write((json.dumps(command) + "\n").encode())
                self.process.stdin.flush()
                line = self._read_line(self.process.stdout.fileno(), timeout)
            except BrokenPipeError:
                line = b""
            if line:
                break
            died = line == b""
            code = self.process.poll()
            self.stop()
            self.restarts += 1
            if not died:
                raise TimeoutError(f"load {command['kind']} overran {timeout:.0f} s; "
                                   "agent restarted")
            if attempt == 2:
                raise RuntimeError(f"the load agent died during {command['kind']} "
                                   f"(exit status {code}); see agent.log")
        answer: dict[str, Any] = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(f"load {command['kind']} failed: {answer['error']}")
        result: dict[str, Any] = answer["result"]
        return result

    @staticmethod
    def _read_line(fd: int, timeout: float) -> bytes | None:
        """One answer line; None on timeout, b"" when the agent closed its end (died)."""
        deadline = time.monotonic() + timeout
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return b""
            data += chunk
        return data

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, 9)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            self.process = None


class Sampler:
    """While a ``with`` block runs: peak VmRSS of some processes (every 50 ms), and the CPU
    time their process trees used (each process with its descendants: pnsd's workers, the
    relay's workers)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak: dict[str, float] = {}
        self.cpu: dict[str, float] = {}     # seconds of CPU used during the block
        self.series: list[tuple[float, float]] = []   # (wall time, CPU of all trees)
        self._trees = CpuTrees(pids.values())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            for name, pid in self.pids.items():
                value = service_rss_mb(name, pid)
                if value is not None:
                    self.peak[name] = max(self.peak.get(name, 0.0), value)
            self.series.append((time.time(), self._trees.seconds()))
            if self._stop.wait(0.05):
                return

    def cpu_between(self, start: float, end: float) -> float | None:
        """CPU seconds of all trees between two wall-clock times (linear interpolation)."""
        if len(self.series) < 2 or end <= start:
            return None
        return _at(self.series, end) - _at(self.series, start)

    def __enter__(self) -> Sampler:
        self.cpu = {name: -self._trees.seconds(pid) for name, pid in self.pids.items()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for name, pid in self.pids.items():
            self.cpu[name] += self._trees.seconds(pid)


def _at(series: list[tuple[float, float]], t: float) -> float:
    for (t0, c0), (t1, c1) in itertools.pairwise(series):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.0)
    return series[0][1] if t < series[0][0] else series[-1][1]


class Stack:
    """Starts services by name (see :data:`STARTERS`), each once; stops them all on exit."""

    def __init__(self, *, keep: bool = False) -> None:
        self.keep = keep      # leave the temporary directory (logs, databases) for a post-mortem
        self.tmp = Path(tempfile.mkdtemp(prefix="pb", dir="/tmp"))
        self.services: dict[str, Service] = {}
        self.agent = Agent(self.tmp)
        self.pg: PgServer | None = None   # the shared job store's server, for *_pg services

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.agent.stop()
        # pnsweb before pnsd, the web baseline before the echo it calls
        for service in reversed(list(self.services.values())):
            service.child.stop()
        self.services.clear()
        if self.pg is not None:
            self.pg.__exit__(None, None, None)
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, names: list[str]) -> None:
        """Start the named services (and what they depend on), concurrently where possible."""
        order = []
        for name in names:
            for dep in (*DEPENDS.get(name, ()), name):
                if dep not in order and dep not in self.services:
                    order.append(dep)
        first = [n for n in order if not DEPENDS.get(n)]
        later = [n for n in order if DEPENDS.get(n)]
        for group in (first, later):
            launched = [(name, STARTERS[name](self, name)) for name in group]
            for name, service in launched:
                self.services[name] = service
            for name, service in launched:
                READY[name](self, service)
        time.sleep(0.5)   # let start-up work settle before the idle RSS is read
        for name in order:
            service = self.services[name]
            service.rss_start = service_rss_mb(name, service.pid)

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def child(self, name: str, argv: list[str], **kwargs: Any) -> Child:
        return Child(name, argv, log=self.tmp / f"{name}.log", **kwargs)

    # -- pnsd ---------------------------------------------------------------------------------

    def pnsd_status(self, name: str) -> dict[str, Any]:
        from protocols.client import Client  # noqa: PLC0415 - the orchestrator's only call

        service = self.services[name]
        with Client(service.endpoint, key=bytes.fromhex(service.key), timeout=10.0) as client:
            status: dict[str, Any] = client.call("status", {})
        return status

    @contextlib.contextmanager
    def sampling(self, *names: str) -> Iterator[Sampler]:
        with Sampler({n: self.services[n].pid for n in names if n in self.services}) as s:
            yield s


# The demo's echo-worker, its workers reached over their stdin and stdout instead of ZeroMQ
STDIO_ECHO = """
[pts.echo-stdio]
mode = "worker"
entry = "pnsd.demo:echo"
workers = 2
transport = "stdio"
"""


def _start_pnsd(stack: Stack, name: str) -> Service:
    home = stack.tmp / name
    home.mkdir()
    record = "false" if name.endswith("_off") else "true"
    config = home / "pnsd.toml"
    store = ""    # *_pg: on a PostgreSQL server (fsync on, as in production), a database each
    if "_pg" in name:
        stack.pg = stack.pg or PgServer().__enter__()
        store = f"store = {stack.pg.create_database(name)!r}\n"
    # Both services log at warning, as a busy production node would: no line per run or request
    config.write_text(f'[pnsd]\nhome = "{home}"\nlog_level = "warning"\n'
                      f"record_sync_runs = {record}\n{store}"
                      # 64 MiB payload rows: a body over the default 64 MiB of max_body
                      '[pnsweb]\nlog_level = "warning"\nmax_body = 134217728\n'
                      # echo-worker with prefetch, against the round-robin relay
                      '[pts.echo-prefetch]\nmode = "worker"\nentry = "pnsd.demo:echo"\n'
                      "workers = 2\nprefetch = 4\n" + STDIO_ECHO)
    child = stack.child(name, [PYTHON, "-m", "pnsd", "start", "--home", str(home),
                               "--config", str(config)],
                        env=child_env(HOME=str(home), PNS_HOME=str(home)))
    return Service(name, child, endpoint=f"ipc://{home}/run/pnsd.sock", home=home, config=config,
                   info={"record_sync_runs": record == "true"})


def _ready_pnsd(stack: Stack, service: Service) -> None:
    assert service.home is not None
    key_file = service.home / "secret.key"
    wait_until(lambda: key_file.exists() and ipc_ready(service.endpoint), timeout=START_TIMEOUT,
               what=service.name, child=service.child)
    service.key = key_file.read_bytes().strip().hex()

    def answers() -> bool:
        try:
            status = stack.pnsd_status(service.name)
        except Exception:  # not up yet: any failure means "poll again"
            return False
        states = [p.get("state") for p in status["pts"].values()]
        return all(s == "ready" for s in states)

    wait_until(answers, timeout=START_TIMEOUT, what=f"{service.name} PTS", child=service.child)
    for pts in stack.pnsd_status(service.name)["pts"].values():
        service.child.extra_pids.update(_pids_of(pts))


REMOTE_PTS = """
[pts.lecho]
mode = "worker"
entry = "pnsd.demo:echo"
[pts.recho]
mode = "worker"
entry = "pnsd.demo:echo"
workers = 0
remote_workers = 1
"""


def _start_pnsd_remote(stack: Stack, name: str) -> Service:
    """A daemon with a worker endpoint (CURVE) and a key pair made for one remote worker."""
    home = stack.tmp / name
    home.mkdir()
    config = home / "pnsd.toml"
    port = free_port()
    config.write_text(f'[pnsd]\nhome = "{home}"\nlog_level = "warning"\ndemo = false\n'
                      f'worker_endpoint = "tcp://127.0.0.1:{port}"\n{REMOTE_PTS}')
    env = child_env(HOME=str(home), PNS_HOME=str(home))
    subprocess.run([PYTHON, "-m", "pnsd", "keys", "new", "bench", "--home", str(home),
                    "--config", str(config), "--out", str(home / "keys")], env=env,
                   check=True, capture_output=True, timeout=60)
    child = stack.child(name, [PYTHON, "-m", "pnsd", "start", "--home", str(home),
                               "--config", str(config)], env=env)
    return Service(name, child, endpoint=f"ipc://{home}/run/pnsd.sock", home=home, config=config,
                   info={"worker_endpoint": f"tcp://127.0.0.1:{port}"})


def _ready_pnsd_remote(stack: Stack, service: Service) -> None:
    """Ready once the remote worker (started here, stopped with the stack) has joined."""
    assert service.home is not None
    home = service.home
    _ready_ipc(stack, service)
    wait_until((home / "secret.key").exists, timeout=START_TIMEOUT,
               what=service.name, child=service.child)
    service.key = (home / "secret.key").read_bytes().strip().hex()
    worker = stack.child(f"{service.name}.worker", [
        PYTHON, "-m", "protocols.worker", "--connect", service.info["worker_endpoint"],
        "--pts", "recho", "--entry", "pnsd.demo:echo", "--key-file", str(home / "secret.key"),
        "--server-key", str(home / "curve" / "server.key"),
        "--key", str(home / "keys" / "bench.key_secret")], env=child_env())
    stack.services[worker.name] = Service(worker.name, worker)

    def joined() -> bool:
        try:
            return bool(stack.pnsd_status(service.name)["pts"]["recho"]["remote"] == 1)
        except Exception:  # not up yet: any failure means "poll again"
            return False

    wait_until(joined, timeout=START_TIMEOUT, what="the remote worker", child=worker)
    for pts in stack.pnsd_status(service.name)["pts"].values():
        service.child.extra_pids.update(_pids_of(pts))


def _pids_of(pts: dict[str, Any]) -> list[int]:
    pids = pts.get("pids") or (pts.get("details") or {}).get("pids") or []
    return [int(p) for p in pids]


def _start_pnsweb(stack: Stack, name: str) -> Service:
    daemon = stack.services[DEPENDS[name][0]]
    port = free_port()
    assert daemon.home is not None and daemon.config is not None
    child = stack.child(name, [PYTHON, "-m", "pnsweb", "-u", WEB_USER, "-p", WEB_USER,
                               "--ip", "127.0.0.1", "--port", str(port),
                               "--config", str(daemon.config)],
                        env=child_env(HOME=str(daemon.home), PNS_HOME=str(daemon.home)))
    return Service(name, child, port=port)


def _ready_pnsweb(stack: Stack, service: Service) -> None:
    """Ready when /healthz answers; then one authenticated call, so that the password's scrypt
    check (cached afterwards) is not paid by the first trial's 32 concurrent requests."""
    _ready_http("/healthz")(stack, service)
    import base64  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    token = base64.b64encode(f"{WEB_USER}:{WEB_USER}".encode()).decode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{service.port}/v1/processes/echo/execution",
        data=b'{"inputs": {"value": 1}}', method="POST",
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        reply.read()


def _ready_http(path: str) -> Any:
    def ready(stack: Stack, service: Service) -> None:
        url = f"http://127.0.0.1:{service.port}{path}"
        wait_until(lambda: http_ready(url), timeout=START_TIMEOUT, what=service.name,
                   child=service.child)
    return ready


def _ready_port(stack: Stack, service: Service) -> None:
    import socket  # noqa: PLC0415

    def accepts() -> bool:
        with socket.create_connection(("127.0.0.1", service.port), timeout=1):
            return True

    wait_until(accepts, timeout=START_TIMEOUT, what=service.name, child=service.child)


def _ready_ipc(stack: Stack, service: Service) -> None:
    wait_until(lambda: ipc_ready(service.endpoint), timeout=START_TIMEOUT, what=service.name,
               child=service.child)


def _start_base_echo(stack: Stack, name: str) -> Service:
    endpoint = f"ipc://{stack.tmp}/echo.sock"
    return Service(name, stack.child(name, [PYTHON, "-m", "bench.base_echo", endpoint]),
                   endpoint=endpoint)


def _start_base_relay(stack: Stack, name: str) -> Service:
    front, back = f"ipc://{stack.tmp}/{name}.sock", f"ipc://{stack.tmp}/{name}-back.sock"
    marker = stack.tmp / f"{name}.ready"
    policy = "one-each" if name == "base_relay_one" else "round-robin"
    child = stack.child(name, [PYTHON, "-m", "bench.base_relay", front, back, "2", str(marker),
                               policy])
    return Service(name, child, endpoint=front, info={"marker": marker})


def _ready_relay(stack: Stack, service: Service) -> None:
    marker: Path = service.info["marker"]
    wait_until(marker.exists, timeout=START_TIMEOUT, what=service.name, child=service.child)


def _start_base_web(stack: Stack, name: str) -> Service:
    port = free_port()
    echo = stack.services["base_echo"].endpoint
    loop = ["uvloop"] if name == "base_web_uv" else []
    return Service(name, stack.child(name, [PYTHON, "-m", "bench.base_web", str(port), echo,
                                            *loop]), port=port)


def _start_base_spawn(stack: Stack, name: str) -> Service:
    port = free_port()
    work = stack.tmp / "spawn"
    work.mkdir()
    return Service(name, stack.child(name, [PYTHON, "-m", "bench.base_spawn", str(port),
                                            str(RUN_PTS), str(work)]), port=port)


def _start_base_jobs(stack: Stack, name: str) -> Service:
    endpoint = f"ipc://{stack.tmp}/jobs.sock"
    db = stack.tmp / "bare-jobs.db"
    return Service(name, stack.child(name, [PYTHON, "-m", "bench.base_jobs", endpoint, str(db)]),
                   endpoint=endpoint, info={"db": db})


STARTERS = {
    "pnsd_on": _start_pnsd, "pnsd_off": _start_pnsd, "pnsweb": _start_pnsweb,
    "pnsd_pg_on": _start_pnsd, "pnsd_pg_off": _start_pnsd, "pnsweb_pg": _start_pnsweb,
    "base_echo": _start_base_echo, "base_relay": _start_base_relay,
    "base_relay_one": _start_base_relay,
    "base_web": _start_base_web, "base_web_uv": _start_base_web, "base_spawn": _start_base_spawn,
    "base_jobs": _start_base_jobs, "pnsd_remote": _start_pnsd_remote,
}
READY = {
    "pnsd_on": _ready_pnsd, "pnsd_off": _ready_pnsd, "pnsweb": _ready_pnsweb,
    "pnsd_pg_on": _ready_pnsd, "pnsd_pg_off": _ready_pnsd, "pnsweb_pg": _ready_pnsweb,
    "base_echo": _ready_ipc, "base_relay": _ready_relay, "base_relay_one": _ready_relay,
    "base_web": _ready_http("/hello"), "base_web_uv": _ready_http("/hello"),
    "base_spawn": _ready_port, "base_jobs": _ready_ipc, "pnsd_remote": _ready_pnsd_remote,
}
DEPENDS = {"pnsweb": ("pnsd_on",), "pnsweb_pg": ("pnsd_pg_on",), "base_web": ("base_echo",),
           "base_web_uv": ("base_echo",)}
