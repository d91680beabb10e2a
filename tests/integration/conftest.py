"""Fixtures that start real daemons: in this test's event loop, or as a `pnsd` process."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop

from harness.postgres import PgMissing, PgServer
from harness.procs import children, cmdline
from pnsd.config import Settings, load_settings
from pnsd.daemon import Daemon
from pnsd.errors import DaemonError
from pnsd.keyfile import load_or_create_key
from pnsweb.keys import DaemonClient
from pnsweb.nodes import daemon_client
from pnsweb.settings import WebSettings
from protocols.client import AsyncClient, Client
from protocols.errors import PnsError

START_TIMEOUT = 30.0


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Any]:
    """pnsweb serves on uvloop (``pnsweb.cli``): the web tests run its app there too; the
    others run on asyncio's loop, as pnsd does."""
    if item.path.name.startswith("test_web_"):
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


def write_config(home: Path, extra: str = "") -> Path:
    """A config file for a daemon living entirely under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "pnsd.toml"
    config.write_text(f"[pnsd]\nhome = {str(home)!r}\n{extra}")
    return config


def settings_for(home: Path, extra: str = "") -> Settings:
    config = write_config(home, extra)
    return load_settings(config=config, home=home, env={"HOME": str(home)})


@contextlib.asynccontextmanager
async def pnsweb_client(settings: WebSettings, timeout: float = 60.0
                        ) -> AsyncIterator[DaemonClient]:
    """The daemon client pnsweb makes for ``settings`` (:func:`pnsweb.nodes.daemon_client`:
    a local daemon by its stream door), waiting up to ``timeout`` for each reply."""
    client = await daemon_client(dataclasses.replace(settings, call_timeout=timeout))
    try:
        yield client
    finally:
        await client.close()


@dataclass
class Running:
    daemon: Daemon
    settings: Settings
    key: bytes

    def client(self, **kwargs: float) -> AsyncClient:
        return AsyncClient(self.settings.endpoint, key=self.key, **kwargs)


async def start_daemon(settings: Settings) -> tuple[Daemon, asyncio.Task[None]]:
    daemon = Daemon(settings)
    task = asyncio.create_task(daemon.run())
    ready = asyncio.create_task(daemon.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=START_TIMEOUT,
                                 return_when=asyncio.FIRST_COMPLETED)
    if ready not in done:
        ready.cancel()
        if task in done:
            task.result()  # raises the start-up error
        raise TimeoutError("daemon did not become ready")
    return daemon, task


async def stop_daemon(daemon: Daemon, task: asyncio.Task[None]) -> None:
    daemon.stopping.set()
    await asyncio.wait_for(task, timeout=60)


@contextlib.asynccontextmanager
async def running_daemon(settings: Settings) -> AsyncIterator[Running]:
    """An in-process daemon with ``settings``, stopped gracefully at the end."""
    daemon, task = await start_daemon(settings)
    try:
        yield Running(daemon, settings, load_or_create_key(settings.key_file, create=False))
    finally:
        await stop_daemon(daemon, task)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_daemon(settings_for(tmp_path / "home")) as node:
        yield node


@pytest.fixture
async def client(running: Running) -> AsyncIterator[AsyncClient]:
    async with running.client(timeout=30.0) as client:
        yield client


@dataclass
class DaemonProcess:
    process: subprocess.Popen[Any]
    home: Path
    config: Path

    @property
    def settings(self) -> Settings:
        return load_settings(config=self.config, home=self.home, env={"HOME": str(self.home)})

    def client(self, timeout: float = 30.0) -> Client:
        settings = self.settings
        return Client(settings.endpoint, key=load_or_create_key(settings.key_file, create=False),
                      timeout=timeout)

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pnsd", *args, "--home", str(self.home),
             "--config", str(self.config)],
            capture_output=True, text=True, timeout=timeout, env=child_env(self.home),
            check=False)

    def terminate(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def kill_group_of(script: str, parent: int) -> None:
    """SIGKILL the process group of the child of ``parent`` that runs ``script`` (a daemon's
    process-mode run: each runs in a group of its own)."""
    for child in children(parent):
        if any(part.endswith(script) for part in cmdline(child).split()):
            os.killpg(child, signal.SIGKILL)
            return
    raise AssertionError(f"no child of {parent} runs {script}")


def child_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PNS_CONFIG", None)
    env.update(HOME=str(home), PNS_HOME=str(home))
    return env


def spawn_daemon(home: Path, extra: str = "") -> DaemonProcess:
    config = write_config(home, extra)
    log = (home / "pnsd.out").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "pnsd", "start", "--home", str(home), "--config", str(config)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env(home),
        start_new_session=True)
    log.close()
    running = DaemonProcess(process, home, config)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((home / "pnsd.out").read_text())
        try:
            with running.client(timeout=1.0) as client:
                client.call("ping", {})
            return running
        except (PnsError, DaemonError, FileNotFoundError):  # not up yet, or no key file yet
            time.sleep(0.05)  # polling a starting process: there is no event to wait on
    running.terminate()
    raise TimeoutError("pnsd did not answer a ping in time")


@contextlib.contextmanager
def spawned_daemon(home: Path, extra: str = "") -> Iterator[DaemonProcess]:
    """A pnsd process (:func:`spawn_daemon`), killed at the end if it still runs."""
    running = spawn_daemon(home, extra)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(timeout=30)


@pytest.fixture
def daemon_process(tmp_path: Path) -> Iterator[DaemonProcess]:
    with spawned_daemon(tmp_path / "home") as running:
        yield running


def spawn_web_daemon(home: Path) -> DaemonProcess:
    """``pnsd start`` under ``home`` with its socket beside it (a short ipc path)."""
    return spawn_daemon(home, f'endpoint = "ipc://{home.parent}/d.sock"\n')


@pytest.fixture
def pnsd(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A pnsd process under ``tmp_path/home`` for the web tests, stopped with SIGTERM."""
    running = spawn_web_daemon(tmp_path / "home")
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.terminate(timeout=60)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One real PostgreSQL server for the session (``initdb`` in a temporary directory),
    stopped at the end; ``make test`` installs it from Debian's packages (``make pg``)."""
    try:
        server = PgServer(durable=False)
    except PgMissing as exc:
        if os.environ.get("CI"):
            raise   # CI installs it: a missing server there is a failure, not a skip
        pytest.skip(f"no PostgreSQL here: {exc}")
    with server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """A fresh, empty database of its own for one test."""
    return pg_server.create_database(f"t{uuid.uuid4().hex[:16]}")
