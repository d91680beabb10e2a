"""The children the hosts start: one place for starting, watching and stopping them.

Owns what happens to a child process and its process group, for the worker and the process hosts
alike: starting it in a session of its own (its pid is its group's id) with the spec's rlimits
and, for long-lived children, the parent-death signal (:mod:`pnsd.hosts.rlimits`); noting its
group in the ledger of :mod:`pnsd.hosts.leftovers` while it may run, so that a restarted daemon
ends what a killed one left; reading its stdout/stderr as they arrive into an output sink (log
lines, a capped capture, or a stdio worker's records) and telling the sink when a pipe closes;
writing its stdin when it was given a pipe; learning about its exit at once; signalling its
whole group; the stop ladder (SIGTERM, a grace for the leader and every member of its group,
SIGKILL on what is left); and describing how it ended. It knows nothing of tasks, runs or worker
messages: the hosts drive it.

Why ``loop.subprocess_exec`` with a protocol, not ``asyncio.create_subprocess_exec``: in 3.11
``Process.wait()`` returns only once every pipe is closed (a grandchild holding stdout delays
it forever) and closing a ``Process``'s pipes needs private attributes. The protocol sees the
exit at once, hands output on as it arrives, and its transport closes through public API.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, cast

import structlog

from pnsd.hosts.leftovers import GroupLedger
from pnsd.hosts.rlimits import describe_exit, oom_kill_count, preexec_for
from pnsd.spec import Limits

log = structlog.get_logger(__name__)

TAIL_LINES = 20
POLL = 0.05           # seconds between checks of a dying group (and of a run's cancel flag)
KILL_WAIT = 1.0       # seconds to wait for the exit after SIGKILL
PIPE_BYTES = 1 << 20  # a stdio worker's pipes: Linux's default cap for unprivileged processes


class OutputSink(Protocol):
    """Where a child's output goes, chunk by chunk, as it arrives (fd 1 or 2)."""

    def feed(self, fd: int, data: bytes) -> None: ...

    def flush(self) -> None: ...


class OutputLimits(Protocol):
    @property
    def output_rate(self) -> float:
        """Lines logged per second (burst: 2 s worth)."""

    @property
    def output_line(self) -> int:
        """Characters kept of one line."""


class OutputForwarder:
    """A long-lived child's output as log lines: capped, rate-limited, a tail kept.

    Runs on the event loop as data arrives, so reading never stops and memory stays bounded
    (one partial line of at most ``output_line`` bytes per stream). When the rate is exceeded,
    lines are only counted (no per-line work), and the count is logged once lines flow again.
    """

    def __init__(self, label: Mapping[str, object], limits: OutputLimits) -> None:
        self.label = dict(label)
        self.max_line = limits.output_line
        self.rate = limits.output_rate
        self.burst = 2 * limits.output_rate
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


class CappedOutput:
    """A short-lived child's output, kept up to ``cap`` bytes per stream (the rest is read and
    dropped, so the child never blocks on a full pipe)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buffers = {1: bytearray(), 2: bytearray()}
        self.truncated = False

    def feed(self, fd: int, data: bytes) -> None:
        buffer = self.buffers[fd]
        room = self.cap - len(buffer)
        if len(data) > room:
            self.truncated = True
        if room > 0:
            buffer += data[:room]

    def flush(self) -> None:
        """Nothing to flush: the buffers are read when the child has ended."""

    def text(self, fd: int) -> str:
        return self.buffers[fd].decode("utf-8", errors="replace")


class _Pipes(asyncio.SubprocessProtocol):
    def __init__(self, output: OutputSink, loop: asyncio.AbstractEventLoop) -> None:
        self.output = output
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()   # every pipe at EOF

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self.output.feed(fd, data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        closed = getattr(self.output, "pipe_closed", None)   # a sink that minds which pipe
        if closed is not None:
            closed(fd)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class Child:
    """One started child, leading its own process group: its pid is the group's id."""

    def __init__(self, transport: asyncio.SubprocessTransport, pipes: _Pipes,
                 argv: Sequence[str], ledger: GroupLedger | None) -> None:
        self.transport = transport
        self.pid: int = transport.get_pid()
        self.argv = list(argv)
        self.output = pipes.output
        self.exited = pipes.exited
        self.closed = pipes.closed
        self.oom_before = oom_kill_count()
        self._ledger = ledger

    @classmethod
    async def spawn(cls, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path | None,
                    limits: Limits, output: OutputSink, die_with_parent: bool = False,
                    ledger: GroupLedger | None = None, stdin_pipe: bool = False) -> Child:
        """Start ``argv`` in a new session (its own group), stdin from /dev/null (or a pipe,
        written with :meth:`write`); raise OSError if it cannot start. With
        ``die_with_parent`` a daemon killed outright takes it along. The group is noted in
        ``ledger`` until :meth:`forget`."""
        loop = asyncio.get_running_loop()
        transport, pipes = await loop.subprocess_exec(
            lambda: _Pipes(output, loop), *argv,
            stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(env), cwd=cwd, start_new_session=True,
            preexec_fn=preexec_for(limits, die_with_parent=die_with_parent),
        )
        if stdin_pipe:      # a stream both ways: large messages pass in fewer wake-ups
            for fd in (0, 1):
                _widen_pipe(transport.get_pipe_transport(fd))
        return cls(transport, pipes, argv, ledger)

    @property
    def returncode(self) -> int | None:
        return self.transport.get_returncode()

    async def note(self) -> None:
        """Note the group in the ledger (a restart after a crash ends it)."""
        if self._ledger is not None:
            await asyncio.to_thread(self._ledger.record, self.pid)

    async def forget(self) -> None:
        """The group is gone: take it out of the ledger."""
        if self._ledger is not None:
            await asyncio.to_thread(self._ledger.forget, self.pid)

    def write(self, pieces: Sequence[bytes]) -> bool:
        """Queue bytes for the child's stdin pipe (never blocks); False once it is closed."""
        pipe = self.transport.get_pipe_transport(0)
        if pipe is None or pipe.is_closing() or self.exited.done():
            return False
        # a write transport, though uvloop's does not subclass asyncio.WriteTransport
        cast(asyncio.WriteTransport, pipe).writelines(pieces)
        return True

    def signal(self, signum: int) -> None:
        """Signal the whole group."""
        signal_group(self.pid, signum)

    async def stop(self, grace: float) -> None:
        """The stop ladder on the whole group: SIGTERM, up to ``grace`` s for the leader and
        every member to end, then SIGKILL on whatever is left, and the exit awaited."""
        loop = asyncio.get_running_loop()
        self.signal(signal.SIGTERM)
        deadline = loop.time() + grace
        while loop.time() < deadline:
            if not self.exited.done():
                await asyncio.wait({self.exited}, timeout=POLL)
            elif await asyncio.to_thread(group_alive, self.pid):
                await asyncio.sleep(POLL)     # the leader is gone, its children are dying
            else:
                return
        self.signal(signal.SIGKILL)
        await asyncio.wait({self.exited}, timeout=KILL_WAIT)

    async def end_leftovers(self, grace: float) -> bool:
        """Members of the group that outlived its leader are stopped too; True if any were."""
        if not await asyncio.to_thread(group_alive, self.pid):
            return False
        log.info("process_leftovers_killed", pid=self.pid, command=self.argv)
        await self.stop(grace)
        return True

    def close(self) -> None:
        """Flush the output and close the pipes."""
        self.output.flush()
        self.transport.close()

    def describe_exit(self, limits: Limits) -> str:
        """Why the child ended, in words for a job's error message."""
        return describe_exit(self.returncode, limits, oom_before=self.oom_before)


def _widen_pipe(pipe: asyncio.BaseTransport | None) -> None:
    """Raise a pipe's buffer to the most an unprivileged process may set (best effort)."""
    handle = pipe.get_extra_info("pipe") if pipe is not None else None
    if handle is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            fcntl.fcntl(handle.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def signal_group(pgid: int, signum: int) -> None:
    # gone already (a PermissionError means the id now belongs to someone else)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process is in the group. Blocking: call it in a thread.

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
    return any(_in_group(pid, pgid) for pid in entries)


def _in_group(pid: str, pgid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return False
    fields = text[text.rfind(")") + 2:].split()   # state, ppid, pgrp, ...
    return len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X")
