"""The ``process`` hosting mode: one OS process per operation (the reference's "delivery man").

Owns resolving a process-mode PTS's argv lists, the per-job ``input/`` and ``output/`` dirs,
and each command's life: started as a child in its own process group with its output captured
up to a cap, ended by the stop ladder on timeout, cancellation or stop, and its leftovers (group
members that outlive it) stopped too. Starting, signalling and stopping children is
:mod:`pnsd.hosts.children`'s. It must not queue, record jobs or decide concurrency: the
registry above does that.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import structlog

from pnsd.errors import BadRequest, Cancelled, InvalidSpec, NotReady, PtsFailed, RunTimeout
from pnsd.hosts.base import HostState
from pnsd.hosts.children import POLL, CappedOutput, Child
from pnsd.hosts.leftovers import GroupLedger
from pnsd.hosts.mailbox import make_exchange_dirs, make_job_dir, read_files, validate_inputs
from pnsd.spec import HOOKS, PtsSpec
from protocols.context import RunContext

__all__ = ["ProcessHost"]

log = structlog.get_logger(__name__)

KILL_GRACE = 0.5      # seconds between SIGTERM and SIGKILL on timeout
PIPE_GRACE = 0.3      # seconds to wait for pipes to reach EOF once the group is gone


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
        self._running: dict[int, Child] = {}      # by process group id
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
        files = validate_inputs(data, self.spec.interface.input_files())
        job_dir = await asyncio.to_thread(make_job_dir, self._work_dir, ctx.job_id, files)
        try:
            ran = await self._execute(
                "run", self._commands["run"], cwd=job_dir, seconds=timeout, ctx=ctx)
            outputs: dict[str, str | bytes] | None = {}
            if ran["returncode"] == 0:
                outputs = await asyncio.to_thread(
                    read_files, job_dir / "output", self.spec.interface.output_files(),
                    self._max_output, "output")
            return _checked("run", {**ran, "outputs": outputs or {}})
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
        ran = await self._execute(name, argv, cwd=cwd, seconds=timeout, ctx=None)
        return _checked(name, {**ran, "outputs": {}})

    async def stop(self, *, grace: float) -> None:
        self._state = HostState("stopped")
        if self._spawning:     # children being started register (and are killed) on their own
            await asyncio.wait(self._spawning, timeout=grace)
        running = list(self._running.values())
        await asyncio.gather(*(child.stop(grace) for child in running))
        self._last_run = None
        await asyncio.to_thread(shutil.rmtree, self._work_dir, ignore_errors=True)
        log.info("process_host_stopped", pts=self.spec.name, killed=len(running))

    def state(self) -> HostState:
        last = str(self._last_run) if self._last_run else None
        details = {**self._state.details, "running": len(self._running), "last_run_dir": last}
        return HostState(self._state.state, self._state.reason, details)

    def script(self, name: str) -> tuple[str, ...]:
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
    ) -> dict[str, Any]:
        """Run ``argv`` to its end (or stop its group): its argv, returncode and output."""
        child = await self._spawn(op, argv, cwd)
        output = child.output
        assert isinstance(output, CappedOutput)
        started = time.monotonic()
        log.info("process_started", pts=self.spec.name, op=op, pid=child.pid, command=list(argv))
        try:
            ending = await _wait_exit(child, seconds, ctx)
            if ending == "exited":
                await child.end_leftovers(KILL_GRACE)
            else:
                await child.stop(KILL_GRACE)
            await asyncio.wait({child.closed}, timeout=PIPE_GRACE)
        except BaseException:
            child.signal(signal.SIGKILL)   # cancelled: no awaiting, just make sure
            raise
        finally:
            child.close()
            self._running.pop(child.pid, None)
        await child.forget()      # a cancelled run's entry stays: the next start drops it
        ran = {"command": list(argv), "returncode": _returncode(child), "stdout": output.text(1),
               "stderr": output.text(2), "truncated": output.truncated}
        if ending != "exited":
            log.warning("process_timeout", pts=self.spec.name, op=op, pid=child.pid,
                        reason=ending, timeout=seconds, returncode=ran["returncode"])
            _raise_unfinished(op, ending, seconds, ran)
        log.info("process_finished", pts=self.spec.name, op=op, pid=child.pid,
                 seconds=round(time.monotonic() - started, 3), returncode=ran["returncode"],
                 truncated=output.truncated)
        return ran

    async def _spawn(self, op: str, argv: tuple[str, ...], cwd: Path) -> Child:
        """Start ``argv``; the child is registered even if the caller is cancelled meanwhile."""
        spawn = asyncio.ensure_future(self._spawn_registered(op, argv, cwd))
        self._spawning.add(spawn)
        spawn.add_done_callback(self._spawning.discard)
        try:
            return await asyncio.shield(spawn)
        except asyncio.CancelledError:
            spawn.add_done_callback(self._abandon)    # kill the child as soon as it is known
            raise

    async def _spawn_registered(self, op: str, argv: tuple[str, ...], cwd: Path) -> Child:
        try:
            child = await Child.spawn(argv, env=self._env, cwd=cwd, limits=self.spec.limits,
                                      output=CappedOutput(self._max_output), ledger=self._ledger)
        except OSError as exc:
            raise PtsFailed(f"{op} command could not start: {exc.strerror or exc}",
                            command=list(argv)) from exc
        self._running[child.pid] = child
        if self._state.state == "stopped":       # stop() came while this child was starting
            child.signal(signal.SIGKILL)
        else:
            await child.note()
        return child

    def _abandon(self, spawn: asyncio.Future[Child]) -> None:
        if spawn.cancelled() or spawn.exception() is not None:
            return
        child = spawn.result()
        child.signal(signal.SIGKILL)
        self._running.pop(child.pid, None)
        child.close()

    async def _retire(self, job_dir: Path) -> None:
        """Make ``job_dir`` the last run dir and remove the one before it."""
        if self._state.state == "stopped":
            await asyncio.to_thread(shutil.rmtree, job_dir, ignore_errors=True)
            return
        previous, self._last_run = self._last_run, job_dir
        if previous is not None and previous != job_dir:
            await asyncio.to_thread(shutil.rmtree, previous, ignore_errors=True)


def _checked(op: str, result: dict[str, Any]) -> dict[str, Any]:
    if result["returncode"] != 0:
        raise PtsFailed(f"{op} command exited with code {result['returncode']}", **result)
    return result


def _returncode(child: Child) -> int:
    """The command's return code; one killed without an exit seen counts as SIGKILLed."""
    code = child.returncode
    return code if code is not None else -signal.SIGKILL


def _raise_unfinished(op: str, ending: str, seconds: float, ran: dict[str, Any]) -> NoReturn:
    if ending == "cancelled":
        raise Cancelled(f"{op} cancelled", **ran)
    raise RunTimeout(f"{op} exceeded {seconds} s", **ran)


async def _wait_exit(child: Child, seconds: float, ctx: RunContext | None) -> str:
    """'exited', 'timeout' or 'cancelled' (the caller set ``ctx.cancelled``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not child.exited.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return "timeout"
        if ctx is not None and ctx.cancelled:
            return "cancelled"
        await asyncio.wait({child.exited}, timeout=min(remaining, POLL))
    return "exited"
