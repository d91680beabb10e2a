"""The stdio transport of a worker-mode PTS: worker messages over each worker's pipes.

Owns writing a generation's messages to its workers' stdin as records and cutting their stdout
into messages (SPEC.md, "The stdio transport"; the framing is :mod:`protocols.stdioframe`),
handing each on as ``[identity, *frames]`` exactly as a ROUTER would, so the worker host and
its dispatcher serve stdio and ZeroMQ workers alike. A worker's stderr goes to its log. A
stream that breaks (garbage, a partial record at its end) or a stdout closed by a worker that
lives on ends that worker, with the reason: the host's supervision restarts it. It must not
spawn processes, decode or sign messages, or touch runs: :mod:`pnsd.hosts.worker` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog
import zmq

from pnsd.hosts.children import OutputForwarder, OutputSink
from pnsd.hosts.workerslot import Launch, WorkerSlot
from protocols.codec import DEFAULT_MAX_BYTES
from protocols.stdioframe import SLACK, FrameReader, FramingError, pack

log = structlog.get_logger(__name__)

STDIN, STDOUT = 0, 1
CLOSE_GRACE = 1.0     # seconds a worker that closed a pipe of ours has to exit before it is killed

Receive = Callable[[list[bytes]], None]


class PipeWire:
    """The :class:`pnsd.hosts.workerslot.Wire` of a stdio generation: no socket, two pipes
    per worker."""

    pipes = True

    def __init__(self) -> None:
        self._receive: Receive | None = None

    def open(self, launch: Launch, context: zmq.Context[Any], receive: Receive) -> None:
        self._receive = receive

    def sink(self, worker: WorkerSlot, output: OutputForwarder) -> OutputSink:
        assert self._receive is not None, "open the wire first"
        return RecordSink(worker, output, self._receive)

    def send(self, worker: WorkerSlot, frames: list[bytes]) -> None:
        process = worker.process
        if process is not None and not process.write(pack(frames)) and not process.exited.done():
            worker.kill("unreachable (its stdin is closed)", counts=True)

    def close(self) -> None:
        self._receive = None


class RecordSink:
    """One worker process's output: records from stdout, log lines from stderr."""

    def __init__(self, worker: WorkerSlot, log_output: OutputForwarder, receive: Receive,
                 *, limit: int = DEFAULT_MAX_BYTES + SLACK) -> None:
        self.worker = worker
        self.identity = worker.identity     # this process's: a later one gets a new sink
        self.log_output = log_output
        self.receive = receive
        self.reader = FrameReader(limit)
        self.broken = False

    def feed(self, fd: int, data: bytes) -> None:
        if fd != STDOUT:
            self.log_output.feed(fd, data)
            return
        if self.broken:
            return                          # the worker is being killed; drop the rest
        try:
            batch = self.reader.feed(data)
        except FramingError as exc:
            self.fault(f"broken stdio stream: {exc}", kill=True)
            return
        for frames in batch:
            self.receive([self.identity, *frames])

    def flush(self) -> None:
        self.log_output.flush()

    def pipe_closed(self, fd: int) -> None:
        """The worker closed its stdin or stdout (or ended): a partial record is a fault, and
        a worker still running after a grace cannot be reached or heard from again."""
        if fd not in (STDIN, STDOUT) or self.broken:
            return
        pending = self.reader.pending() if fd == STDOUT else 0
        if pending:
            self.fault(f"stdout ended inside a record ({pending} bytes)", kill=False)
        name = "stdout" if fd == STDOUT else "stdin"
        asyncio.get_running_loop().call_later(CLOSE_GRACE, self._kill_if_alive, name)

    def _kill_if_alive(self, name: str) -> None:
        if self._current():
            self.fault(f"closed its {name} and kept running", kill=True)

    def fault(self, reason: str, *, kill: bool) -> None:
        self.broken = True
        if not self._current():
            return
        worker = self.worker
        worker.stream_fault = worker.stream_fault or reason
        log.warning("worker_stream_broken", **worker.label(), reason=reason)
        if kill:
            worker.kill(reason, counts=True)

    def _current(self) -> bool:
        """Whether this sink's process is still the worker's live one."""
        process = self.worker.process
        return (self.worker.identity == self.identity and process is not None
                and not process.exited.done())
