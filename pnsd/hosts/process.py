"""The ``process`` hosting mode: one OS process per operation (the reference's "delivery man").

Owns resolving a process-mode PTS's argv lists, the per-job ``input/`` and ``output/`` dirs,
running a command in its own process group with capped output capture, and killing that whole
group on timeout, cancellation, stop, or when children outlive the command. It must not queue,
record jobs or decide concurrency: the registry above does that.

Why ``loop.subprocess_exec`` with a protocol, not ``asyncio.create_subprocess_exec``: in 3.11
``Process.wait()`` returns only once every pipe is closed (a grandchild holding stdout delays it
forever) and closing a ``Process``'s pipes needs private attributes. The protocol sees the exit
at once, caps output as it arrives, and its transport closes through public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import structlog

from pnsd.errors import BadRequest, Cancelled, InvalidSpec, NotReady, PtsFailed, RunTimeout
from pnsd.hosts.base import HOOKS, HostState
from pnsd.hosts.mailbox import make_exchange_dirs, make_job_dir, read_files, validate_inputs
from pnsd.hosts.rlimits import preexec_for
from pnsd.hosts.leftovers import GroupLedger
from pnsd.spec import PtsSpec
from protocols.context import RunContext

__all__ = ["ProcessHost"]

log = structlog.get_logger(__name__)

KILL_GRACE = 0.5      # seconds between SIGTERM and SIGKILL on timeout
PIPE_GRACE = 0.3      # seconds to wait for pipes to reach EOF once the group is gone
POLL = 0.05           # seconds between checks of ctx.cancelled and of a dying group


class ProcessHost:
    """Runs a process-mode PTS: each run in a fresh job dir, each command in its own group.

    ``work_dir`` is this generation's own area (the daemon gives each generation a fresh one):
    :meth:`stop` removes it, so it must never be shared with another generation.
    """

    queues_runs = False

    def __init__(
        self, spec: PtsSpec, *, pts_dir: Path, work_dir: Path,
        scripts_fallback: Path | None = None, max_output: int = 16 * 2**20,
        env: Mapping[str, str] | None = None, ledger: GroupLedger | None = None,
    ) -> None:
        self.spec = spec
        self._ledger = ledger       # notes each child's group, for a restart after a crash
        self._pts_dir = pts_dir
        self._work_dir = work_dir
        self._fallback = scripts_fallback
        self._max_output = max_output
        self._extra_env = dict(env or {})
        self._env: dict[str, str] = {}
        self._commands: dict[str, tuple[str, ...]] = {}
        self._preexec = preexec_for(spec.limits)
        self._running: dict[int, _Capture] = {}   # process group id -> its capture
        self._spawning: set[asyncio.Future[Any]] = set()
        self._last_run: Path | None = None
        self._state = HostState()

    async def start(self) -> None:
        self._env = self._child_env()
        try:
            self._commands = await asyncio.to_thread(self._resolve_all)
            await asyncio.to_thread(self._work_dir.mkdir, parents=True, exist_ok=True)
        except InvalidSpec as exc:
            self._state = HostState("unavailable", reason=exc.message)
            raise
        self._state = HostState("ready")

    async def run(
        self, data: Any, *, timeout: float, ctx: RunContext,
    ) -> dict[str, Any]:
        self._require_ready()
        files = validate_inputs(data, self.spec.inputs)
        job_dir = await asyncio.to_thread(make_job_dir, self._work_dir, ctx.job_id, files)
        try:
            capture = await self._execute(
                "run", self._commands["run"], cwd=job_dir, seconds=timeout, ctx=ctx)
            outputs: dict[str, str | bytes] | None = {}
            if capture.returncode == 0:
                outputs = await asyncio.to_thread(read_files, job_dir / "output",
                                                  self.spec.outputs, self._max_output, "output")
            return _checked("run", capture.result(outputs or {}))
        finally:
            await self._retire(job_dir)

    async def hook(
        self, name: str, *, timeout: float,
    ) -> dict[str, Any] | None:
        if name not in HOOKS:
            raise BadRequest(f"unknown hook {name!r}; expected one of {', '.join(HOOKS)}")
        self._require_ready()
        argv = self._commands.get(name)
        if not argv:
            return None
        cwd = self.exchange_dir()
        if name == "init":      # the PTS dir's, and the ones pts.files shows after this init
            await asyncio.to_thread(make_exchange_dirs, self._pts_dir)
            await asyncio.to_thread(make_exchange_dirs, cwd)
        capture = await self._execute(name, argv, cwd=cwd, seconds=timeout, ctx=None)
        return _checked(name, capture.result({}))

    async def stop(self, *, grace: float) -> None:
        self._state = HostState("stopped")
        if self._spawning:     # children being started register (and are killed) on their own
            await asyncio.wait(self._spawning, timeout=grace)
        running = list(self._running.items())
        await asyncio.gather(*(_stop_group(pgid, cap, grace) for pgid, cap in running))
        self._last_run = None
        await asyncio.to_thread(shutil.rmtree, self._work_dir, ignore_errors=True)
        log.info("process_host_stopped", pts=self.spec.name, killed=len(running))

    def state(self) -> HostState:
        last = str(self._last_run) if self._last_run else None
        details = {**self._state.details, "running": len(self._running), "last_run_dir": last}
        return HostState(self._state.state, self._state.reason, details)

    def command(self, name: str) -> tuple[str, ...]:
        """The resolved argv of ``run`` or a hook (empty when the spec has none)."""
        return self._commands.get(name, ())

    def last_run_dir(self) -> Path | None:
        """The most recent finished job dir."""
        return self._last_run

    def exchange_dir(self) -> Path:
        """Where the reference API's ``input/`` and ``output/`` are: the most recent finished
        job dir, or the PTS dir before any run. Hooks run there."""
        return self._last_run or self._pts_dir

    def _require_ready(self) -> None:
        if self._state.state != "ready":
            raise NotReady(f"PTS {self.spec.name} is {self._state.state}")

    def _child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.spec.env, **self._extra_env}
        if self.spec.pythonpath:
            paths = [str(self._pts_dir / p) for p in self.spec.pythonpath]
            if env.get("PYTHONPATH"):
                paths.append(env["PYTHONPATH"])
            env["PYTHONPATH"] = os.pathsep.join(paths)
        return env

    def _resolve_all(self) -> dict[str, tuple[str, ...]]:
        argvs = {key: getattr(self.spec, key) for key in ("run", *HOOKS)}
        return {key: self._resolve(key, argv) if argv else () for key, argv in argvs.items()}

    def _resolve(self, key: str, argv: tuple[str, ...]) -> tuple[str, ...]:
        program = argv[0]
        found: Path | None
        if "/" in program:
            found = self._pts_dir / program       # an absolute program stays absolute
        else:
            dirs = [d for d in (self._pts_dir, self._fallback) if d is not None]
            found = next((d / program for d in dirs if (d / program).is_file()), None)
            if found is None:
                which = shutil.which(program, path=self._env.get("PATH"))
                found = Path(which) if which else None
        where = f"{self._pts_dir}, {self._fallback or '-'} or PATH"
        if found is None or not found.exists():
            raise InvalidSpec(f"PTS {self.spec.name}: {key} command {program!r} not found "
                              f"(looked in {where})")
        if not found.is_file() or not os.access(found, os.X_OK):
            raise InvalidSpec(f"PTS {self.spec.name}: {key} command {program!r} ({found}) "
                              "is not an executable file")
        return (str(found), *argv[1:])

    async def _execute(
        self, op: str, argv: tuple[str, ...], *, cwd: Path, seconds: float,
        ctx: RunContext | None,
    ) -> _Capture:
        """Run ``argv`` to its end (or kill its group) and return what it printed."""
        transport, capture = await self._spawn(op, argv, cwd)
        pgid = transport.get_pid()        # start_new_session: the child leads its own group
        started = time.monotonic()
        log.info("process_started", pts=self.spec.name, op=op, pid=pgid, command=list(argv))
        try:
            ending = await _wait_exit(capture, seconds, ctx)
            if ending == "exited":
                await _reap_leftovers(pgid, capture)
            else:
                await _stop_group(pgid, capture, KILL_GRACE)
            await _bounded(capture.closed, PIPE_GRACE)
        except BaseException:
            _signal_group(pgid, signal.SIGKILL)   # cancelled: no awaiting, just make sure
            raise
        finally:
            capture.returncode = transport.get_returncode()
            transport.close()
            self._running.pop(pgid, None)
        if self._ledger is not None:    # a cancelled run's entry stays: the next start drops it
            await asyncio.to_thread(self._ledger.forget, pgid)
        elapsed = round(time.monotonic() - started, 3)
        if ending != "exited":
            log.warning("process_timeout", pts=self.spec.name, op=op, pid=pgid, reason=ending,
                        timeout=seconds, returncode=capture.returncode)
            _raise_unfinished(op, ending, seconds, capture)
        log.info("process_finished", pts=self.spec.name, op=op, pid=pgid, seconds=elapsed,
                 returncode=capture.returncode, truncated=capture.truncated)
        return capture

    async def _spawn(
        self, op: str, argv: tuple[str, ...], cwd: Path,
    ) -> tuple[asyncio.SubprocessTransport, _Capture]:
        """Start ``argv``; the child is registered even if the caller is cancelled meanwhile."""
        spawn = asyncio.ensure_future(self._spawn_registered(op, argv, cwd))
        self._spawning.add(spawn)
        spawn.add_done_callback(self._spawning.discard)
        try:
            return await asyncio.shield(spawn)
        except asyncio.CancelledError:
            spawn.add_done_callback(self._abandon)    # kill the child as soon as it is known
            raise

    async def _spawn_registered(
        self, op: str, argv: tuple[str, ...], cwd: Path,
    ) -> tuple[asyncio.SubprocessTransport, _Capture]:
        loop = asyncio.get_running_loop()
        try:
            transport, capture = await loop.subprocess_exec(
                lambda: _Capture(argv, self._max_output, loop), *argv,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=cwd, env=self._env, start_new_session=True, preexec_fn=self._preexec,
            )
        except OSError as exc:
            raise PtsFailed(f"{op} command could not start: {exc.strerror or exc}",
                            command=list(argv)) from exc
        self._running[transport.get_pid()] = capture
        if self._state.state == "stopped":       # stop() came while this child was starting
            _signal_group(transport.get_pid(), signal.SIGKILL)
        elif self._ledger is not None:
            await asyncio.to_thread(self._ledger.record, transport.get_pid())
        return transport, capture

    def _abandon(self, spawn: asyncio.Future[tuple[asyncio.SubprocessTransport, _Capture]]) -> None:
        if spawn.cancelled() or spawn.exception() is not None:
            return
        transport, _ = spawn.result()
        _signal_group(transport.get_pid(), signal.SIGKILL)
        self._running.pop(transport.get_pid(), None)
        transport.close()

    async def _retire(self, job_dir: Path) -> None:
        """Make ``job_dir`` the last run dir and remove the one before it."""
        if self._state.state == "stopped":
            await asyncio.to_thread(shutil.rmtree, job_dir, ignore_errors=True)
            return
        previous, self._last_run = self._last_run, job_dir
        if previous is not None and previous != job_dir:
            await asyncio.to_thread(shutil.rmtree, previous, ignore_errors=True)


class _Capture(asyncio.SubprocessProtocol):
    """Collects stdout/stderr up to a cap (the rest is drained and dropped) and the exit."""

    def __init__(self, argv: tuple[str, ...], cap: int, loop: asyncio.AbstractEventLoop) -> None:
        self.argv = argv
        self.cap = cap
        self.buffers = {1: bytearray(), 2: bytearray()}
        self.truncated = False
        self.returncode: int | None = None
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buffer = self.buffers[fd]
        room = self.cap - len(buffer)
        if len(data) > room:
            self.truncated = True
        if room > 0:
            buffer += data[:room]

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def result(self, outputs: dict[str, str | bytes]) -> dict[str, Any]:
        return {
            "command": list(self.argv),
            "returncode": self.returncode if self.returncode is not None else -signal.SIGKILL,
            "stdout": self.buffers[1].decode("utf-8", errors="replace"),
            "stderr": self.buffers[2].decode("utf-8", errors="replace"),
            "outputs": outputs,
            "truncated": self.truncated,
        }


def _checked(op: str, result: dict[str, Any]) -> dict[str, Any]:
    if result["returncode"] != 0:
        raise PtsFailed(f"{op} command exited with code {result['returncode']}", **result)
    return result


def _raise_unfinished(op: str, ending: str, seconds: float, capture: _Capture) -> NoReturn:
    details = capture.result({})
    del details["outputs"]
    if ending == "cancelled":
        raise Cancelled(f"{op} cancelled", **details)
    raise RunTimeout(f"{op} exceeded {seconds} s", **details)


# -- process groups ------------------------------------------------------------------------------

async def _wait_exit(capture: _Capture, seconds: float, ctx: RunContext | None) -> str:
    """'exited', 'timeout' or 'cancelled' (the caller set ``ctx.cancelled``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not capture.exited.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return "timeout"
        if ctx is not None and ctx.cancelled:
            return "cancelled"
        await asyncio.wait({capture.exited}, timeout=min(remaining, POLL))
    return "exited"


async def _reap_leftovers(pgid: int, capture: _Capture) -> None:
    """Children that outlive the command are stopped too: nothing stays behind."""
    if await asyncio.to_thread(_group_alive, pgid):
        log.info("process_leftovers_killed", pid=pgid, command=list(capture.argv))
        await _stop_group(pgid, capture, KILL_GRACE)


async def _stop_group(pgid: int, capture: _Capture, grace: float) -> None:
    """SIGTERM the group, give it ``grace`` seconds, then SIGKILL whatever is left."""
    loop = asyncio.get_running_loop()
    _signal_group(pgid, signal.SIGTERM)
    deadline = loop.time() + grace
    while loop.time() < deadline:
        if not capture.exited.done():
            await _bounded(capture.exited, POLL)
        elif await asyncio.to_thread(_group_alive, pgid):
            await asyncio.sleep(POLL)     # the leader is gone, its children are dying
        else:
            return
    _signal_group(pgid, signal.SIGKILL)
    await _bounded(capture.exited, KILL_GRACE)


def _signal_group(pgid: int, signum: int) -> None:
    # gone already (a PermissionError means the id now belongs to someone else)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process is in the group.

    Zombies count as gone: an orphan's zombie waits for PID 1 to reap it, and some container
    init processes never do.
    """
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        entries = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except FileNotFoundError:
        return True      # no /proc: trust kill(0)
    return any(_proc_state(pid, pgid) for pid in entries)


def _proc_state(pid: str, pgid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return False
    fields = text[text.rfind(")") + 2:].split()   # state, ppid, pgrp, ...
    return len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X")


async def _bounded(future: asyncio.Future[None], seconds: float) -> None:
    await asyncio.wait({future}, timeout=seconds)
