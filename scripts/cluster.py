"""``make cluster``: a local demonstration of several nodes on one job store.

Starts, under DIR: PostgreSQL (``initdb`` into DIR/pg on the first run, kept between runs),
two pnsd nodes (DIR/node-a, DIR/node-b) on that store with one shared signing key, a remote
worker joining node-a's PTS ``echo-remote`` over ``tcp://`` with CURVE (its key pair in
DIR/keys, authorised in node-a's ``curve/workers``), and pnsweb fronting both nodes
(``[pnsweb] daemons``); prints where to point a browser and curl; stops
everything it started, in reverse order, on SIGTERM, SIGINT or SIGHUP to this process, on
Ctrl-C, when make dies or is stopped (see scripts/devrun.py), or when any part exits.

Each process is one entry of the list :func:`parts` returns: one more (a remote worker, a
third node) is one more entry.

Usage: python scripts/cluster.py DIR PORT USER   (pnsweb's password in $PNSWEB_PASSWORD)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]   # harness, pnsd: the repository

from devrun import FATAL, PR_SET_PDEATHSIG, _parent_stopping  # noqa: E402 - beside this file

from harness.postgres import PgServer  # noqa: E402
from harness.procs import Child, child_env, http_ready, ipc_ready, wait_until  # noqa: E402
from pnsd.curve import new_key_pair  # noqa: E402
from pnsd.keyfile import load_or_create_key  # noqa: E402
from protocols.client import Client  # noqa: E402

BIN = Path(sys.executable).parent
NODES = ("node-a", "node-b")
REMOTE = "echo-remote"   # node-a's PTS served by the remote worker only
POLL = 0.2       # seconds between looks at the parts and at make
START_TIMEOUT = 60.0


@dataclass
class Part:
    """One process of the cluster: how to start it and how to tell it is up."""

    name: str
    argv: list[str]
    ready: Callable[[], bool]
    env: dict[str, str] | None = None
    vital: bool = False    # its exit stops the cluster (a node's does not: the others go on)


def node_config(base: Path, name: str, store: str, workers: str = "") -> Path:
    """A node's config; with ``workers`` (a tcp:// address) it takes a remote worker there."""
    home = base / name
    home.mkdir(parents=True, exist_ok=True)
    config = home / "pnsd.toml"
    remote = (f"worker_endpoint = {workers!r}   # remote workers, CURVE keys in curve/workers/\n"
              if workers else "")
    pts = (f"\n[pts.{REMOTE}]   # served by a worker that joins over tcp:// (CURVE)\n"
           'mode = "worker"\nentry = "pnsd.demo:echo"\nworkers = 0\nremote_workers = 1\n'
           if workers else "")
    config.write_text(
        "[pnsd]\n"
        f"home = {str(home)!r}\n"
        f"key_file = {str(base / 'secret.key')!r}   # one key for the cluster: pnsweb signs\n"
        f"store = {store!r}\n"
        f"node = {name!r}\n" + remote +
        "\n[pts.isleep]   # the demo sleep, marked idempotent: re-run if its node dies\n"
        'mode = "inproc"\nentry = "pnsd.demo:sleep"\nidempotent = true\n' + pts)
    return config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def remote_worker(base: Path, workers: str) -> Part:
    """A worker as it would run on another machine: it connects to node-a over tcp:// with
    its own CURVE key pair (made here once, authorised in node-a's curve/workers)."""
    curve, keys = base / NODES[0] / "curve", base / "keys"
    secret = keys / "cluster-w1.key_secret"
    if not secret.exists():
        keys.mkdir(mode=0o700, exist_ok=True)
        new_key_pair(curve, "cluster-w1", role="workers", out=keys)
    argv = [sys.executable, "-m", "protocols.worker", "--connect", workers, "--pts", REMOTE,
            "--entry", "pnsd.demo:echo", "--key-file", str(base / "secret.key"),
            "--server-key", str(curve / "server.key"), "--key", str(secret)]
    socket_path = base / NODES[0] / "run" / "pnsd.sock"
    return Part("remote-worker", argv, ready=partial(_joined, socket_path, base),
                env=child_env(PYTHONPATH=str(Path(__file__).resolve().parent.parent)))


def _joined(socket_path: Path, base: Path) -> bool:
    """node-a counts the remote worker in its pool."""
    key = load_or_create_key(base / "secret.key", create=False)
    try:
        with Client(f"ipc://{socket_path}", key=key, timeout=2.0) as client:
            return bool(client.call("status")["pts"][REMOTE]["remote"])
    except Exception:   # not up yet: asked again
        return False


def web_config(base: Path, port: str) -> Path:
    config = base / "pnsweb.toml"
    daemons = [f"ipc://{base / name / 'run' / 'pnsd.sock'}" for name in NODES]
    config.write_text(
        f"[pnsd]\nhome = {str(base)!r}\nkey_file = {str(base / 'secret.key')!r}\n"
        f"\n[pnsweb]\nport = {int(port)}\ndaemons = {daemons!r}\n")
    return config


def parts(base: Path, store: str, port: str, user: str) -> list[Part]:
    """The processes after PostgreSQL, in start order."""
    started: list[Part] = []
    workers = f"tcp://127.0.0.1:{free_port()}"
    for name in NODES:
        config = node_config(base, name, store, workers if name == NODES[0] else "")
        socket_path = base / name / "run" / "pnsd.sock"
        started.append(Part(name, [str(BIN / "pnsd"), "start", "--config", str(config),
                                   "--home", str(base / name)],
                            ready=partial(ipc_ready, f"ipc://{socket_path}"),
                            env=child_env(PNS_HOME=str(base / name))))
    started.append(remote_worker(base, workers))
    started.append(Part("pnsweb", [str(BIN / "pnsweb"), "--config",
                                    str(web_config(base, port)), "-u", user, "-o", port],
                        ready=partial(http_ready, f"http://127.0.0.1:{port}/healthz"),
                        vital=True))
    return started


def main(argv: list[str]) -> int:
    base, port, user = Path(argv[0]).absolute(), argv[1], argv[2]
    parent = os.getppid()
    stopping: list[int] = []
    for signum in FATAL:
        signal.signal(signum, lambda signum, _frame: stopping.append(signum))
    with contextlib.suppress(OSError, AttributeError):      # Linux: a dying make says so
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    base.mkdir(parents=True, exist_ok=True)
    (base / "logs").mkdir(exist_ok=True)
    load_or_create_key(base / "secret.key", create=True)
    running: list[tuple[Part, Child]] = []
    with PgServer(base / "pg", log=base / "logs" / "postgres.log") as pg:
        try:
            for part in parts(base, pg.url, port, user):
                child = Child(part.name, part.argv, log=base / "logs" / f"{part.name}.log",
                              env=part.env)
                running.append((part, child))
                wait_until(part.ready, timeout=START_TIMEOUT, what=part.name, child=child)
            _announce(base, port, user, pg.url)
            return _watch(running, stopping, parent)
        finally:
            for _part, child in reversed(running):
                child.stop(grace=15.0)
            print("cluster: stopped", flush=True)


def _watch(running: list[tuple[Part, Child]], stopping: list[int], parent: int) -> int:
    """Until a signal, make stopping, or a vital part's exit; a node's exit is reported."""
    reported: set[str] = set()
    while not stopping and not _parent_stopping(parent):
        for part, child in running:
            if child.alive() or part.name in reported:
                continue
            reported.add(part.name)
            print(f"cluster: {part.name} exited:\n{child.tail(5)}", flush=True)
            if part.vital:
                return 1
        time.sleep(POLL)   # polling: make's signals leave no other trace to wait on
    return 0


def _announce(base: Path, port: str, user: str, url: str) -> None:
    web = f"http://127.0.0.1:{port}"
    print(f"console:  {web}/console/   (user {user})\n"
          f"curl:     curl -u {user}:PASSWORD -X POST -H 'Prefer: respond-async' "
          f"-H 'Content-Type: application/json' -d '{{\"inputs\": {{\"seconds\": 2}}}}' "
          f"{web}/v1/processes/isleep/execution\n"
          f"          curl {web}/v1/jobs/JOB_ID   (from any node)\n"
          f"nodes:    {', '.join(NODES)} (homes and pnsd.toml under {base})\n"
          f"remote:   a worker on {NODES[0]}'s worker endpoint (tcp://, CURVE) serves "
          f"{web}/v1/processes/{REMOTE}/execution\n"
          f"store:    {url} (data in {base / 'pg'})\n"
          f"failover: kill -9 $(cat {base / NODES[0] / 'run' / 'pnsd.pid'})   "
          f"(its jobs settle on {NODES[1]} within the lease, 10 s)\n"
          f"logs:     {base / 'logs'}; Ctrl-C stops everything", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
