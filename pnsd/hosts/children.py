"""Supervision of worker processes: launching, output, exits, stop ladders, restart budgets.

Owns what happens to worker processes and their process groups: preparing a generation's launch
(socket path, key file, command line, environment), starting a worker in a session of its own
with rlimits, reading its stdout/stderr continuously into the daemon log (line length and line
rate capped, a short tail kept for error messages), learning about its exit at once and
describing it ("exit code 3", "killed by signal SIGKILL", "killed: out of memory"), killing
it, and the restart budget with exponential backoff. It knows nothing of tasks or of the
messages workers send: the worker host (:mod:`pnsd.hosts.worker`) drives it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import zmq

import protocols
from pnsd.hosts.rlimits import describe_exit, oom_kill_count, preexec_for
from pnsd.spec import Limits, PtsSpec
from protocols.codec import DEFAULT_MAX_BYTES

log = structlog.get_logger(__name__)

TAIL_LINES = 20
MAX_SOCKET_PATH = 100                 # sun_path holds 108 bytes; keep a margin
PROTOCOLS_DIR = Path(protocols.__file__).resolve().parent
HOOKS = ("init", "config", "clean")


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


class OutputForwarder:
    """Turns a worker's output chunks into log lines: capped, rate-limited, tail kept.

    Runs on the event loop as data arrives, so reading never stops and memory stays bounded
    (one partial line of at most ``output_line`` bytes per stream). When the rate is exceeded,
    lines are only counted (no per-line work), and the count is logged once lines flow again.
    """

    def __init__(self, label: Mapping[str, object], tuning: WorkerTuning) -> None:
        self.label = dict(label)
        self.max_line = tuning.output_line
        self.rate = tuning.output_rate
        self.burst = 2 * tuning.output_rate
        self.tokens = self.burst
        self.stamp = time.monotonic()
        self.dropped = 0
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._partial: dict[int, bytes] = {1: b"", 2: b""}

    def feed(self, fd: int, data: bytes) -> None:
        pieces = data.split(b"\n")
        pieces[0] = self._partial[fd] + pieces[0]
        rest = pieces.pop()
        self._partial[fd] = rest[: self.max_line]     # a line without end is cut, not hoarded
        if pieces:
            self._lines(fd, pieces)

    def flush(self) -> None:
        for fd, rest in self._partial.items():
            if rest:
                self._lines(fd, [rest])
        self._partial = {1: b"", 2: b""}
        self._report_dropped()

    def _lines(self, fd: int, lines: list[bytes]) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if fd == 2:
            self.tail.extend(self._text(line) for line in lines[-TAIL_LINES:])
        allowed = min(len(lines), int(self.tokens))
        if allowed < len(lines):
            self.dropped += len(lines) - allowed
        if allowed and self.dropped:
            self._report_dropped()
        self.tokens -= allowed
        stream = "stdout" if fd == 1 else "stderr"
        for line in lines[:allowed]:
            log.info("worker_output", **self.label, stream=stream, line=self._text(line))

    def _report_dropped(self) -> None:
        if self.dropped:
            log.warning("worker_output_dropped", **self.label, lines=self.dropped,
                        reason=f"over {self.rate:g} lines/s")
            self.dropped = 0

    def _text(self, line: bytes) -> str:
        return line[: self.max_line].decode("utf-8", errors="replace").rstrip("\r")


class _ChildProtocol(asyncio.SubprocessProtocol):
    def __init__(self, output: OutputForwarder, loop: asyncio.AbstractEventLoop) -> None:
        self.output = output
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()   # every pipe at EOF

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.output.feed(fd, data)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class WorkerProcess:
    """One spawned worker: its pid (= its process group id), exit and output.

    Spawned through ``loop.subprocess_exec`` with a protocol rather than
    ``create_subprocess_exec``: the exit is reported at once even while a grandchild keeps the
    pipes open (``Process.wait()`` would wait for the pipes too).
    """

    def __init__(self, transport: asyncio.SubprocessTransport, protocol: _ChildProtocol) -> None:
        self.transport = transport
        self.pid: int = transport.get_pid()
        self.output = protocol.output
        self.exited = protocol.exited
        self.closed = protocol.closed
        self.oom_before = oom_kill_count()

    @classmethod
    async def spawn(cls, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None,
                    limits: Limits, label: Mapping[str, object],
                    tuning: WorkerTuning) -> WorkerProcess:
        """Start ``argv`` in a new session (its own process group); raise OSError if it can't."""
        loop = asyncio.get_running_loop()
        output = OutputForwarder(label, tuning)
        transport, protocol = await loop.subprocess_exec(
            lambda: _ChildProtocol(output, loop), *argv,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(env), cwd=cwd, start_new_session=True,
            preexec_fn=preexec_for(limits, die_with_parent=True),   # a killed daemon takes it
        )
        return cls(transport, protocol)

    @property
    def returncode(self) -> int | None:
        return self.transport.get_returncode()

    def signal_group(self, signum: int) -> None:
        signal_group(self.pid, signum)

    def describe_exit(self, limits: Limits) -> str:
        """Why the process ended, in words for a job's error message."""
        return describe_exit(self.returncode, limits, oom_before=self.oom_before)

    async def start_error(self, pts: str, reason: str) -> str:
        """The message for a worker that ended before its hello, with its last stderr lines."""
        await asyncio.wait({self.closed}, timeout=1.0)    # let the pipes deliver the last lines
        message = f"PTS {pts}: worker failed to start: {reason}"
        if self.output.tail:
            message += "; stderr: " + " | ".join(list(self.output.tail)[-5:])
        return message

    async def stop(self, grace: float) -> None:
        """SIGTERM the group, wait ``grace``, SIGKILL it; also kills leftovers of a dead leader."""
        if not self.exited.done():
            self.signal_group(signal.SIGTERM)
            await asyncio.wait({self.exited}, timeout=grace)
        self.signal_group(signal.SIGKILL)   # the leader or children it left behind
        await asyncio.wait({self.exited}, timeout=max(grace, 1.0))
        self.close()

    def close(self) -> None:
        self.output.flush()
        self.transport.close()


def signal_group(pgid: int, signum: int) -> None:
    # gone already (a PermissionError means the id now belongs to someone else)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


@dataclass(eq=False)
class WorkerSlot:
    """One of a PTS's worker positions; its process is replaced when it dies."""

    index: int
    identity: bytes = b""        # the ROUTER routing id of the current process
    process: WorkerProcess | None = None
    hello: asyncio.Future[None] | None = None
    ready: bool = False          # said hello and not being killed
    last_seen: float = 0.0
    served: int = 0
    spawns: int = 0
    failures: int = 0            # exits in a row without a hello in between (backoff)
    kill_reason: str = ""        # set when we killed it: what a task on it fails with
    kill_counts: bool = True     # whether that kill spends restart budget
    ended: WorkerProcess | None = None   # the last process that ended

    async def spawn(self, launch: Launch, *, limits: Limits, label: Mapping[str, object],
                    tuning: WorkerTuning) -> WorkerProcess:
        self.spawns += 1
        self.identity = f"w{self.index}.{self.spawns}".encode()
        self.hello = asyncio.get_running_loop().create_future()
        self.hello.add_done_callback(consume)
        self.kill_reason, self.ready = "", False
        process = await WorkerProcess.spawn(
            [*launch.argv, "--id", self.identity.decode()], env=launch.env, cwd=None,
            limits=limits, label={**label, "worker": self.index}, tuning=tuning)
        process.output.label["pid"] = process.pid
        self.process = process
        self.last_seen = time.monotonic()
        log.info("worker_started", **process.output.label)
        return process

    def kill(self, reason: str, *, counts: bool) -> bool:
        """SIGKILL the process group, remembering why; False if there is nothing to kill."""
        process = self.process
        if process is None or process.exited.done() or self.kill_reason:
            return False
        self.kill_reason, self.kill_counts, self.ready = reason, counts, False
        log.warning("worker_killed", **process.output.label, reason=reason)
        process.signal_group(signal.SIGKILL)
        return True

    def release(self, process: WorkerProcess, limits: Limits, *,
                expected: bool) -> tuple[str, bool]:
        """Forget the ended ``process``: why it ended, and whether that spends budget."""
        reason = self.kill_reason or process.describe_exit(limits)
        counts = self.kill_counts if self.kill_reason else True
        self.process, self.ready, self.ended = None, False, process
        log.log(logging.INFO if expected or not counts else logging.WARNING, "worker_exited",
                **process.output.label, reason=reason, returncode=process.returncode)
        return reason, counts


@dataclass
class Launch:
    """How a generation starts its workers: endpoint, command line, environment, own files."""

    endpoint: str = ""
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    owned: list[Path] = field(default_factory=list)   # removed by :meth:`remove`

    def prepare(self, spec: PtsSpec, *, run_dir: Path, key: bytes, key_file: Path | None,
                heartbeat: float) -> None:
        """Make the socket path, key file and library dir. Blocking: call it in a thread."""
        token = os.urandom(4).hex()
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        base = run_dir / f"w-{spec.name}-{token}"
        socket_path = Path(f"{base}.sock")
        if len(str(socket_path)) > MAX_SOCKET_PATH:   # a deep run dir: use a private short one
            short = Path(tempfile.mkdtemp(prefix="pns-"))
            self.owned.append(short)
            socket_path = short / f"w-{token}.sock"
        self.owned.append(socket_path)
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
        self.endpoint = f"ipc://{socket_path}"
        self.argv = worker_command(spec, self.endpoint, key_file, heartbeat)
        self.env = worker_env(spec, lib)

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
        """Delete what :meth:`prepare` made. Blocking."""
        for path in reversed(self.owned):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self.owned.clear()


def worker_command(spec: PtsSpec, endpoint: str, key_file: Path, heartbeat: float) -> list[str]:
    """``[*command, python, "-m", "protocols.worker", ...]`` for ``spec``.

    A ``command`` without ``python`` is taken to end with its own interpreter (DESIGN.md's
    ``["docker", "run", "-i", "img", "python"]``); otherwise ``python`` or the daemon's own.
    """
    assert spec.entry is not None
    interpreter = [spec.python] if spec.python else [] if spec.command else [sys.executable]
    argv = [*spec.command, *interpreter, "-m", "protocols.worker", "--connect", endpoint,
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


async def stop_processes(processes: list[WorkerProcess], grace: float) -> None:
    """Give processes asked to stop ``grace`` s to exit, then SIGTERM, then SIGKILL the groups."""
    running = {p.exited for p in processes if not p.exited.done()}
    if running:
        await asyncio.wait(running, timeout=grace)
    await asyncio.gather(*(p.stop(max(0.2, min(grace, 1.0))) for p in processes))


async def cancel_and_wait(tasks: set[asyncio.Task[Any]]) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def consume(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: an abandoned wait's failure is expected."""
    if not future.cancelled():
        future.exception()
