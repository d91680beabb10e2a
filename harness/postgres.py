"""A real PostgreSQL server in a directory of its own, for the tests, the benchmarks and
``make cluster``.

Owns finding the server's programs (``$PG_BIN``, then Debian's ``/usr/lib/postgresql/N/bin``,
then ``PATH``), ``initdb`` into a data directory, starting ``postgres`` on a free loopback port
(its socket in the data directory), waiting until it answers, stopping it (fast shutdown, or
SIGKILL to play a crash) and starting it again on the same port. PostgreSQL refuses to run as
root: as root, the server runs as the ``postgres`` user that Debian's package creates. Must
not know what the databases hold.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.procs import free_port

START_TIMEOUT = 60.0
SERVER_USER = "postgres"


class PgMissing(RuntimeError):
    """No PostgreSQL server programs on this machine (``make pg`` installs them)."""


def pg_bin() -> Path:
    """The directory of ``initdb`` and ``postgres``."""
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    found = shutil.which("initdb")
    candidates.append(str(Path(found).resolve().parent) if found else "")
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    raise PgMissing("no PostgreSQL server programs (initdb); install Debian's postgresql "
                    "package (make pg) or set PG_BIN")


class PgServer:
    """One server: ``start()``, ``url``, ``stop()``, ``kill()``; a context manager."""

    def __init__(self, data_dir: Path | None = None, *, durable: bool = True,
                 log: Path | None = None) -> None:
        self.bin = pg_bin()
        self._own_dir = data_dir is None
        self.dir = data_dir if data_dir is not None else Path(tempfile.mkdtemp(prefix="pns-pg-"))
        self.data = self.dir / "data"
        self.log = log or self.dir / "postgres.log"
        self.port = free_port()
        self.durable = durable   # False: fsync off (tests that do not crash the machine)
        self.process: subprocess.Popen[Any] | None = None
        self._user = _server_user()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> PgServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def initdb(self) -> None:
        """Make the data directory unless it holds a cluster already (``make cluster`` keeps
        its data between runs)."""
        if (self.data / "PG_VERSION").exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._give(self.dir)
        self._run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--auth=trust", "-E", "UTF8", "--locale=C"])

    def start(self) -> None:
        self.initdb()
        settings = ["-c", "listen_addresses=127.0.0.1",
                    "-c", f"unix_socket_directories={self.data}",
                    "-c", "max_connections=200", "-c", "log_min_messages=warning"]
        if not self.durable:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 *settings], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, **self._as_user())
        self._wait_ready()

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then SIGKILL if it would not go."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def kill(self) -> None:
        """The server dies at once (its whole group): connections break, nothing is flushed."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        pid_file = self.data / "postmaster.pid"
        pid_file.unlink(missing_ok=True)

    def create_database(self, name: str) -> str:
        self._psql(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def _psql(self, sql: str) -> None:
        subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                        "-qc", sql], check=True, capture_output=True, timeout=30)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited: {self.log.read_text(errors='replace')}")
            probe = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", "postgres"], capture_output=True, check=False, timeout=10)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"postgres did not answer on port {self.port}")

    def _run(self, argv: list[str]) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120,
                                **self._as_user())
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stdout}{result.stderr}")

    def _as_user(self) -> dict[str, Any]:
        return {} if self._user is None else {"user": self._user, "group": self._user,
                                              "extra_groups": []}

    def _give(self, path: Path) -> None:
        """As root: the directory belongs to the server's user, who must reach it."""
        if self._user is None:
            return
        entry = pwd.getpwnam(self._user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o700)


def _server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError as exc:
        raise PgMissing(f"running as root needs the {SERVER_USER!r} user (Debian's "
                        "postgresql package makes it) to run the server") from exc
    return SERVER_USER
