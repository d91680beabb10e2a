"""The model-based test's hands: a real pnsd and pnsweb, reached over HTTP, the CLI and ZeroMQ.

Owns one node under a directory of its own (config with two web users and a small
``max_message_bytes``, the processes, started through :class:`faults.procs.Node`), and every
call the machine makes, each with an explicit timeout: HTTP as a given user (or anonymous),
``pnsd`` CLI commands, direct daemon calls (the operator's view: "404 everywhere" includes the
daemon itself), signals (SIGHUP, SIGKILL of a worker or of pnsd) and the search for
processes left behind. It must not decide what a reply should be: the machine does.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from base64 import b64encode
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faults.procs import Node, leftovers
from harness.procs import ROOT, cmdline, descendants, wait_until
from pnsweb.settings import hash_password
from protocols.errors import RemoteError
from tests.integration.model_pts import toml_table

LIMIT = 2**20                 # max_message_bytes of the test's daemon: sizes around it are cheap
HTTP_TIMEOUT = 40.0           # longer than pnsweb's call_timeout: a hang shows as its 503/504
WEB_CALL_TIMEOUT = 20
CLI_TIMEOUT = 90.0
DAEMON_TIMEOUT = 20.0
SETTLE = 10.0                 # seconds a process ending on its own may take
PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "carol": "carol-password"}
ADMIN = "alice"


@functools.cache
def _users_toml() -> str:
    """[[pnsweb.users]] for alice (admin), bob and carol (scrypt: hashed once per test session)."""
    return "".join(
        f'[[pnsweb.users]]\nname = "{name}"\npassword_hash = "{hash_password(password)}"\n'
        f"admin = {'true' if name == ADMIN else 'false'}\n"
        for name, password in PASSWORDS.items())


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.raw)
        except ValueError:
            return {"not_json": self.raw[:200].decode(errors="replace")}

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.raw[:300]!r}"


class Driver:
    """One pnsd home under ``root`` with its daemon and web front-end."""

    def __init__(self, root: Path, *, call_timeout: int = WEB_CALL_TIMEOUT) -> None:
        self.root = root
        self.code_dir = root / "code"
        pnsd = (f"max_message_bytes = {LIMIT}\ndrain_timeout = 5\nswap_timeout = 30\n"
                "retention_age = 0\n")
        web = f'call_timeout = {call_timeout}\nlog_level = "warning"\n{_users_toml()}'
        self.node = Node(root, "home", pnsd=pnsd, pnsweb=web)
        self.pts_d = self.node.home / "pts.d"

    # -- processes -----------------------------------------------------------------------

    def start(self) -> None:
        try:
            self.node.start_daemon()
            self.node.start_web()
        except BaseException:
            self.node.stop()
            raise

    def stop(self) -> list[tuple[int, str]]:
        """Stop pnsweb and pnsd on their ladders; what is still alive afterwards (killed)."""
        self.node.stop()
        found = leftovers(self.root)
        deadline = time.monotonic() + SETTLE
        while found and time.monotonic() < deadline:
            time.sleep(0.1)       # a process that is exiting: no event to wait on
            found = leftovers(self.root)
        for pid, _ in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return found

    def kill_daemon(self) -> None:
        """SIGKILL pnsd alone: its workers and process-mode children are not signalled."""
        assert self.node.daemon is not None
        self.node.daemon.kill_hard()

    def restart_daemon(self) -> None:
        self.node.start_daemon()

    def sighup(self) -> None:
        assert self.node.daemon is not None
        self.node.daemon.signal(signal.SIGHUP)

    def worker_pids(self, module_prefix: str) -> list[int]:
        """Live worker processes whose entry module starts with ``module_prefix``."""
        return [pid for pid, cmd in leftovers(self.root)
                if "protocols.worker" in cmd and module_prefix in cmdline(pid)]

    def strays(self) -> list[tuple[int, str]]:
        """Processes naming this node that are neither pnsweb (and its children) nor the
        running pnsd and its descendants: what an earlier life of pnsd left behind."""
        keep: set[int] = set()
        if self.node.web is not None:      # pnsweb and the processes it serves from
            keep |= {self.node.web.pid, *descendants(self.node.web.pid)}
        if self.node.daemon is not None and self.node.daemon.alive():
            keep |= {self.node.daemon.pid, *descendants(self.node.daemon.pid)}
        return [(pid, cmd) for pid, cmd in leftovers(self.root) if pid not in keep]

    # -- HTTP ----------------------------------------------------------------------------

    def http(self, method: str, path: str, *, user: str | None = None, body: Any = None,
             headers: dict[str, str] | None = None, timeout: float = HTTP_TIMEOUT) -> Reply:
        """One request to pnsweb as ``user`` (None: anonymous); a JSON ``body`` if given."""
        sent = dict(headers or {})
        payload = None
        if body is not None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        if user is not None:
            token = b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
            sent["Authorization"] = f"Basic {token}"
        connection = http.client.HTTPConnection("127.0.0.1", self.node.web_port, timeout=timeout)
        try:
            connection.request(method, path, body=payload, headers=sent)
            response = connection.getresponse()
            return Reply(response.status, dict(response.headers), response.read())
        finally:
            connection.close()

    def link_up(self) -> Reply:
        """``/readyz``: its body says whether pnsweb reaches the daemon."""
        return self.http("GET", "/readyz", timeout=15.0)

    def wait_link(self, timeout: float = 30.0) -> None:
        def reachable() -> bool:
            try:
                reply = self.link_up()
            except OSError:
                return False
            return bool(reply.json().get("daemon", {}).get("reachable"))
        wait_until(reachable, timeout=timeout, what="pnsweb reaching pnsd")

    # -- the daemon, directly and through its CLI ----------------------------------------

    def daemon(self, op: str, body: Any, *, timeout: float = DAEMON_TIMEOUT) -> Any:
        """A direct call as the operator (the node's key); RemoteError for the daemon's no."""
        with self.node.client(timeout=timeout) as client:
            return client.call(op, body)

    def result(self, job_id: str, *, timeout: float = DAEMON_TIMEOUT) -> Any:
        """A job's result as the operator reads it: in chunks when over the message limit."""
        with self.node.client(timeout=timeout) as client:
            return client.result(job_id)

    def daemon_code(self, op: str, body: Any) -> str:
        """The error code of a direct call, or "ok"."""
        try:
            self.daemon(op, body)
        except RemoteError as exc:
            return str(exc.code)
        return "ok"

    def cli(self, *args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pnsd", *args, "--home", str(self.node.home),
             "--config", str(self.node.config)],
            capture_output=True, text=True, timeout=timeout, env=self.node.env(), cwd=ROOT,
            check=False)

    def write_pts_file(self, name: str, table: dict[str, Any]) -> Path:
        """``name``'s spec as a one-table TOML file outside pts.d (for ``pts deploy FILE``)."""
        path = self.root / f"{name}.toml"
        path.write_text(toml_table(name, table))
        return path

    def edit_pts_d(self, name: str, table: dict[str, Any]) -> None:
        """Rewrite ``pts.d/NAME.toml`` in place, as an operator does before a reload."""
        self.pts_d.mkdir(exist_ok=True)
        target = self.pts_d / f"{name}.toml"
        scratch = self.pts_d / f".{name}.toml.new"
        scratch.write_text(toml_table(name, table))
        scratch.replace(target)

    def logs(self) -> str:
        parts = []
        for proc in (self.node.daemon, self.node.web):
            if proc is not None:
                parts.append(f"--- {proc.name} ---\n{proc.tail(20)}")
        return "\n".join(parts)
