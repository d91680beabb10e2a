"""The services a benchmark starts, by name: how each is started and known to be ready.

Owns each service's command line and configuration (pnsd with its PTS, a remote worker,
pnsweb, the bare baselines), the check that says it is ready, and the tables
:data:`STARTERS`, :data:`READY` and :data:`DEPENDS` that :class:`bench.stack.Stack` starts
them from. It must not stop processes or measure anything (the stack and its sampler do).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.postgres import PgServer
from harness.procs import (
    PYTHON,
    ROOT,
    Child,
    child_env,
    free_port,
    http_ready,
    ipc_ready,
    wait_until,
)

if TYPE_CHECKING:
    from bench.stack import Stack

START_TIMEOUT = 60.0
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


def _start_base_echo_stream(stack: Stack, name: str) -> Service:
    path = stack.tmp / "echo-stream.sock"
    return Service(name, stack.child(name, [PYTHON, "-m", "bench.base_stream", str(path)]),
                   endpoint=f"unix:{path}")


def _ready_stream(stack: Stack, service: Service) -> None:
    path = Path(service.endpoint.removeprefix("unix:"))
    wait_until(path.exists, timeout=START_TIMEOUT, what=service.name, child=service.child)


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
    # base_web_stream: the same handlers, their echo over a Unix stream; on uvloop as pnsweb
    echo = stack.services[DEPENDS[name][0]].endpoint
    loop = ["uvloop"] if name in ("base_web_uv", "base_web_stream") else []
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
    "base_echo_stream": _start_base_echo_stream, "base_web_stream": _start_base_web,
    "base_jobs": _start_base_jobs, "pnsd_remote": _start_pnsd_remote,
}
READY = {
    "pnsd_on": _ready_pnsd, "pnsd_off": _ready_pnsd, "pnsweb": _ready_pnsweb,
    "pnsd_pg_on": _ready_pnsd, "pnsd_pg_off": _ready_pnsd, "pnsweb_pg": _ready_pnsweb,
    "base_echo": _ready_ipc, "base_relay": _ready_relay, "base_relay_one": _ready_relay,
    "base_web": _ready_http("/hello"), "base_web_uv": _ready_http("/hello"),
    "base_spawn": _ready_port, "base_jobs": _ready_ipc, "pnsd_remote": _ready_pnsd_remote,
    "base_echo_stream": _ready_stream, "base_web_stream": _ready_http("/hello"),
}
DEPENDS = {"pnsweb": ("pnsd_on",), "pnsweb_pg": ("pnsd_pg_on",), "base_web": ("base_echo",),
           "base_web_uv": ("base_echo",), "base_web_stream": ("base_echo_stream",)}
