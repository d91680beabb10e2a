"""A worker-mode PTS's worker positions and how their processes are launched and reached.

Owns the worker slots (one position of a PTS's N workers, whose process is replaced when it
dies: its identity, hello, readiness, kill reason), preparing a generation's launch (socket
path, key file, library dir, command line, environment; containers through
:mod:`pnsd.hosts.container`), the wire seam (:class:`Wire`) and its ZeroMQ side
(:class:`Outbox`, the ROUTER its messages to workers leave by), choosing the worker protocol
version from a hello, the timings of worker supervision and the restart budget with
exponential backoff.
Processes themselves are started, watched and stopped by :mod:`pnsd.hosts.children`; the
worker host (:mod:`pnsd.hosts.worker`) drives both.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog
import zmq

import protocols
from pnsd.hosts.children import Child, OutputForwarder, OutputSink
from pnsd.hosts.container import ContainerChild, container_name, remove_containers, run_prefix
from pnsd.hosts.leftovers import GroupLedger
from pnsd.spec import HOOKS, Container, Limits, PtsSpec
from protocols.codec import DEFAULT_MAX_BYTES
from protocols.pump import Pump

log = structlog.get_logger(__name__)

MAX_SOCKET_PATH = 100                 # sun_path holds 108 bytes; keep a margin
STDIO = "stdio"                       # the transport, and the --connect value that names it
PROTOCOLS_DIR = Path(protocols.__file__).resolve().parent


@dataclass(frozen=True)
class WorkerTuning:
    """Timings and caps of worker supervision; the defaults suit production."""

    heartbeat: float = 1.0            # seconds between a worker's heartbeats
    missed_beats: int = 3             # silent this many intervals: hung, killed and respawned
    start_timeout: float = 30.0       # seconds a starting worker has to say hello
    cancel_grace: float = 2.0         # seconds between task.cancel and the kill
    restarts: int = 5                 # restarts allowed per window, then the PTS is unavailable
    restart_window: float = 60.0
    backoff_first: float = 0.1        # first restart delay; doubles per failure in a row
    backoff_max: float = 5.0
    output_rate: float = 100.0        # worker output lines logged per second (burst: 2 s worth)
    output_line: int = 2000           # characters kept of one output line


class RestartPolicy:
    """At most ``tuning.restarts`` restarts in any ``tuning.restart_window`` s, with backoff."""

    def __init__(self, tuning: WorkerTuning, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tuning = tuning
        self.clock = clock
        self.total = 0
        self._recent: collections.deque[float] = collections.deque()

    def delay(self, failures: int) -> float | None:
        """Spend a restart after ``failures`` in a row: its delay, or None if over budget."""
        now, tuning = self.clock(), self.tuning
        while self._recent and now - self._recent[0] > tuning.restart_window:
            self._recent.popleft()
        if len(self._recent) >= tuning.restarts:
            return None
        self._recent.append(now)
        self.total += 1
        return float(min(tuning.backoff_max, tuning.backoff_first * 2 ** max(0, failures - 1)))


@dataclass(eq=False)
class WorkerSlot:
    """One of a PTS's worker positions; its process is replaced when it dies."""

    index: int
    identity: bytes = b""        # the ROUTER routing id of the current process
    process: Child | None = None
    hello: asyncio.Future[None] | None = None
    ready: bool = False          # said hello and not being killed
    last_seen: float = 0.0
    served: int = 0
    spawns: int = 0
    failures: int = 0            # exits in a row without a hello in between (backoff)
    kill_reason: str = ""        # set when we killed it: what a task on it fails with
    kill_counts: bool = True     # whether that kill spends restart budget
    ended: Child | None = None   # the last process that ended
    output: OutputForwarder | None = None   # the current (or last) process's output
    stream_fault: str = ""       # what broke the current process's stdio stream, if anything
    early: Any = None            # its hello, if it came before the spawn was recorded
    # a remote worker's way out (its gate's socket); None: the generation's own wire
    route: Callable[[list[bytes]], None] | None = None

    def begin(self) -> bytes:
        """This position's next process: its identity and hello, known before it exists (its
        hello may come before :meth:`spawn` returns)."""
        self.spawns += 1
        self.identity = f"w{self.index}.{self.spawns}".encode()
        self.hello = asyncio.get_running_loop().create_future()
        self.hello.add_done_callback(consume)
        self.kill_reason, self.ready, self.stream_fault, self.early = "", False, "", None
        return self.identity

    async def spawn(self, launch: Launch, *, limits: Limits, label: Mapping[str, object],
                    tuning: WorkerTuning, ledger: GroupLedger | None = None,
                    wire: Wire | None = None) -> Child:
        """Start the process :meth:`begin` named (a long-lived child: it dies with the
        daemon)."""
        output = OutputForwarder({**label, "worker": self.index}, tuning)
        process = await launch.spawn(
            self.identity.decode(), limits=limits,
            output=output if wire is None else wire.sink(self, output), ledger=ledger,
            stdin_pipe=wire is not None and wire.pipes)
        output.label["pid"] = process.pid
        self.process, self.output = process, output
        self.last_seen = time.monotonic()
        log.info("worker_started", **output.label)
        return process

    async def start_error(self, pts: str, reason: str) -> str:
        """The message for a worker that ended before its hello, with its last stderr lines."""
        if self.ended is not None:    # let the pipes deliver the last lines
            await asyncio.wait({self.ended.closed}, timeout=1.0)
        message = f"PTS {pts}: worker failed to start: {reason}"
        if self.output is not None and self.output.tail:
            message += "; stderr: " + " | ".join(list(self.output.tail)[-5:])
        return message

    def label(self) -> dict[str, object]:
        return self.output.label if self.output is not None else {"worker": self.index}

    def kill(self, reason: str, *, counts: bool) -> bool:
        """SIGKILL the process group, remembering why; False if there is nothing to kill."""
        process = self.process
        if process is None or process.exited.done() or self.kill_reason:
            return False
        self.kill_reason, self.kill_counts, self.ready = reason, counts, False
        log.warning("worker_killed", **self.label(), reason=reason)
        process.signal(signal.SIGKILL)
        return True

    def refuse(self, reason: str, grace: float) -> None:
        """The daemon refused its hello: it should exit, and is killed after ``grace`` if it
        does not; it ends with ``reason``, spending restart budget."""
        process = self.process
        if process is None or process.exited.done() or self.kill_reason:
            return
        self.kill_reason, self.kill_counts, self.ready = reason, True, False
        log.warning("worker_refused", **self.label(), reason=reason)
        def kill_if_alive() -> None:
            if not process.exited.done():
                process.signal(signal.SIGKILL)

        asyncio.get_running_loop().call_later(grace, kill_if_alive)

    def release(self, process: Child, limits: Limits, *,
                expected: bool) -> tuple[str, bool]:
        """Forget the ended ``process``: why it ended, and whether that spends budget."""
        reason = self.kill_reason or process.describe_exit(limits)
        if self.stream_fault and self.stream_fault not in reason:
            reason = f"{reason}; {self.stream_fault}"
        counts = self.kill_counts if self.kill_reason else True
        self.process, self.ready, self.ended = None, False, process
        log.log(logging.INFO if expected or not counts else logging.WARNING, "worker_exited",
                **self.label(), reason=reason, returncode=process.returncode)
        return reason, counts


@dataclass
class Launch:
    """How a generation starts its workers: endpoint, command line, environment, own files."""

    endpoint: str = ""
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    owned: list[Path] = field(default_factory=list)   # removed by :meth:`remove`
    env_names: list[str] = field(default_factory=list)
    container: Container | None = None
    mounts: list[Path] = field(default_factory=list)  # what a container must see
    token: str = ""
    pts: str = ""
    run_dir: Path = Path()

    async def spawn(self, identity: str, *, limits: Limits, output: OutputSink,
                    ledger: GroupLedger | None, stdin_pipe: bool = False) -> Child:
        """Start one worker process (a long-lived child: it dies with the daemon)."""
        argv = [*self.argv, "--id", identity]
        if self.container is None:
            return await Child.spawn(argv, env=self.env, cwd=None, limits=limits,
                                     output=output, die_with_parent=True, ledger=ledger,
                                     stdin_pipe=stdin_pipe)
        name = container_name(self.pts, self.token, identity)
        prefix = run_prefix(self.container, name, mounts=self.mounts,
                            env_names=["PYTHONPATH", *self.env_names], run_dir=self.run_dir,
                            generation=self.token)
        try:
            child = await ContainerChild.spawn(
                [*prefix, *argv], env=self.env, cwd=None, limits=limits, output=output,
                die_with_parent=True, ledger=ledger, stdin_pipe=stdin_pipe)
        except OSError as exc:      # name the runtime: the error is about it, not the worker
            raise OSError(exc.errno, f"{exc.strerror} ({prefix[0]})") from exc
        assert isinstance(child, ContainerChild)
        return child.attach(self.container, name)

    def prepare(self, spec: PtsSpec, *, run_dir: Path, key: bytes, key_file: Path | None,
                heartbeat: float) -> None:
        """Make the socket path, key file and library dir. Blocking: call it in a thread."""
        token = os.urandom(4).hex()
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        base = run_dir / f"w-{spec.name}-{token}"
        if spec.container is not None:   # a directory of its own, mounted into the containers
            remove_containers(spec.container.runtime, f"pns.run={run_dir.resolve()}",
                              leftovers=True)
            base.mkdir(mode=0o700)
            self.owned.append(base)
            base = base / "w"
        socket_dir = base.parent
        if spec.transport == STDIO:
            self.endpoint = STDIO
        else:
            socket_path = self._socket(base, token)
            socket_dir, self.endpoint = socket_path.parent, f"ipc://{socket_path}"
        if key_file is None:
            key_file = Path(f"{base}.key")
            self.owned.append(key_file)
            with os.fdopen(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
                           "wb") as fh:
                fh.write(key)
        # only `protocols` goes on the worker's path, never the dir holding it: that may be a
        # site-packages whose compiled modules belong to the daemon's interpreter
        lib = Path(f"{base}.lib")
        self.owned.append(lib)
        lib.mkdir(mode=0o700)
        (lib / "protocols").symlink_to(PROTOCOLS_DIR, target_is_directory=True)
        self.argv = worker_command(spec, self.endpoint, key_file, heartbeat)
        self.env = worker_env(spec, lib)
        self.container, self.token, self.pts, self.run_dir = (spec.container, token,
                                                              spec.name, run_dir.resolve())
        self.env_names = list(spec.env)
        self.mounts = [socket_dir, lib, PROTOCOLS_DIR, key_file,
                       *(Path(p).resolve() for p in spec.pythonpath)]

    def _socket(self, base: Path, token: str) -> Path:
        socket_path = Path(f"{base}.sock")
        if len(str(socket_path)) > MAX_SOCKET_PATH:   # a deep run dir: use a private short one
            short = Path(tempfile.mkdtemp(prefix="pns-"))
            self.owned.append(short)
            socket_path = short / f"w-{token}.sock"
        self.owned.append(socket_path)
        return socket_path

    def bind(self, context: zmq.Context[Any]) -> zmq.Socket[bytes]:
        """The ROUTER the workers connect to, bound to :attr:`endpoint`."""
        socket: zmq.Socket[bytes] = context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.ROUTER_MANDATORY, 1)    # a send to a gone worker fails loudly
        socket.setsockopt(zmq.SNDHWM, 100_000)
        socket.setsockopt(zmq.RCVHWM, 100_000)
        socket.setsockopt(zmq.MAXMSGSIZE, DEFAULT_MAX_BYTES + 2**20)
        socket.bind(self.endpoint)
        return socket

    def remove(self) -> None:
        """Delete what :meth:`prepare` made, and any container of this generation. Blocking."""
        if self.container is not None and self.token:
            remove_containers(self.container.runtime, f"pns.generation={self.token}",
                              leftovers=False)
        for path in reversed(self.owned):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.owned.clear()


class Wire(Protocol):
    """How a generation's messages reach its workers and come back: one ROUTER socket
    (:class:`Outbox`) or each worker's pipes (:class:`pnsd.hosts.stdiolink.PipeWire`).
    Messages come in as ``[identity, *frames]`` to the ``receive`` given to :meth:`open`."""

    pipes: bool             # whether a worker gets a stdin pipe

    def open(self, launch: Launch, context: zmq.Context[Any],
             receive: Callable[[list[bytes]], None]) -> None: ...

    def sink(self, worker: WorkerSlot, output: OutputForwarder) -> OutputSink: ...

    def send(self, worker: WorkerSlot, frames: list[bytes]) -> None: ...

    def close(self) -> None: ...


class Outbox:
    """Where a generation's messages to its workers leave: its ROUTER's pump, once bound. A
    worker the socket cannot reach (gone, or not reading) cannot serve: it is killed."""

    pipes = False

    def __init__(self) -> None:
        self.pump: Pump | None = None

    def open(self, launch: Launch, context: zmq.Context[Any],
             receive: Callable[[list[bytes]], None]) -> None:
        self.pump = Pump(launch.bind(context), receive)

    def sink(self, worker: WorkerSlot, output: OutputForwarder) -> OutputSink:
        return output           # both streams are the worker's log

    def close(self) -> None:
        if self.pump is not None:
            self.pump.close()

    def send(self, worker: WorkerSlot, frames: list[bytes]) -> None:
        if self.pump is None:
            return
        try:
            self.pump.send([worker.identity, *frames])
        except zmq.ZMQError as exc:
            worker.kill(f"unreachable ({exc.strerror})", counts=True)


def worker_command(spec: PtsSpec, endpoint: str, key_file: Path, heartbeat: float) -> list[str]:
    """``[*command, python, "-m", "protocols.worker", ...]`` for ``spec``.

    A ``command`` without ``python`` is taken to end with its own interpreter (a container,
    ``["docker", "run", "-i", "img", "python"]``); otherwise ``python`` or the daemon's own.
    """
    assert spec.entry is not None
    # in a container the daemon's own interpreter is not there: the image's python3 is
    default = ["python3"] if spec.container is not None else [sys.executable]
    interpreter = [spec.python] if spec.python else [] if spec.command else default
    runtime = "protocols.stdioworker" if endpoint == STDIO else "protocols.worker"
    argv = [*spec.command, *interpreter, "-m", runtime, "--connect", endpoint,
            "--entry", spec.entry, "--key-file", str(key_file), "--heartbeat", f"{heartbeat:g}",
            "--max-bytes", str(DEFAULT_MAX_BYTES)]
    for hook in HOOKS:
        entry = getattr(spec, f"{hook}_entry")
        if entry:
            argv += [f"--{hook}", entry]
    return argv


def worker_env(spec: PtsSpec, lib: Path) -> dict[str, str]:
    """The daemon's environment, the spec's ``env``, and PYTHONPATH = pythonpath + lib + old."""
    env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
    paths = [os.path.abspath(p) for p in spec.pythonpath] + [str(lib)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


async def stop_processes(processes: list[Child], grace: float) -> None:
    """Give processes asked to stop ``grace`` s to exit, then the stop ladder on each group."""
    running = {p.exited for p in processes if not p.exited.done()}
    if running:
        await asyncio.wait(running, timeout=grace)
    await asyncio.gather(*(p.stop(max(0.2, min(grace, 1.0))) for p in processes))
    for process in processes:
        process.close()


async def cancel_and_wait(tasks: set[asyncio.Task[Any]]) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def consume(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: an abandoned wait's failure is expected."""
    if not future.cancelled():
        future.exception()

