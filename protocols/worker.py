"""The worker runtime: serve one PTS callable to a PNS daemon over the worker protocol.

Run as ``python -m protocols.worker --connect ipc://... --entry module:function
--key-file PATH [--init m:f] [--config m:f] [--clean m:f] [--heartbeat 1.0] [--id ID]``.
It loads the callables (exit code 3 if the entry cannot be loaded, 4 if the init hook fails),
runs init once, connects a DEALER to the daemon, says ``worker.hello`` and then serves
``task.req`` messages one at a time (see SPEC.md, "Worker protocol").

Threads: the main thread owns the socket (heartbeats, cancel, stop, sending); the PTS runs in
one long-lived second thread so a long run never silences the heartbeat. Owns nothing of the
daemon's state and imports only ``protocols``, pyzmq, msgpack and the stdlib (Python 3.8+).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import queue
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import zmq

from protocols import messages
from protocols.codec import DEFAULT_MAX_BYTES, Codec, Message, new_message_id
from protocols.context import EntryError, RunContext, accepts_ctx, load_entry
from protocols.errors import ErrorCode, PnsError, ProtocolError

EXIT_OK = 0
EXIT_BAD_ENTRY = 3
EXIT_INIT_FAILED = 4
OPS = ("run", "init", "config", "clean")
CAPABILITIES = ["cancel", "progress", "log"]
MAX_LINE = 16 * 1024          # characters of one task.log line
MAX_PENDING_LOGS = 1000       # log lines waiting to be sent; beyond, lines are dropped
FINAL_LINGER_MS = 1000        # how long the last reply may take to leave at exit
COPY_THRESHOLD = 64 * 1024    # frames from this size on are sent zero-copy
# Plain ints: pyzmq's enum flags cost an enum construction on every ``|`` (~2 us per frame).
_SEND_MORE = int(zmq.NOBLOCK) | int(zmq.SNDMORE)
_SEND_LAST = int(zmq.NOBLOCK)
_RECV = int(zmq.NOBLOCK)

Outgoing = Tuple[str, Any, Optional[str]]     # (message type, body, re)


def note(text: str) -> None:
    """One line on stderr: the daemon forwards the worker's stderr into its log."""
    sys.stderr.write("pns-worker[%d]: %s\n" % (os.getpid(), text))
    sys.stderr.flush()


class Call:
    """One loaded callable and how to invoke it (with ``ctx=`` if it takes one)."""

    def __init__(self, entry: str) -> None:
        self.entry = entry
        self.func = load_entry(entry)
        self.wants_ctx = accepts_ctx(self.func)
        self.is_async = inspect.iscoroutinefunction(self.func)

    def __call__(self, data: Any, ctx: RunContext) -> Any:
        kwargs = {"ctx": ctx} if self.wants_ctx else {}
        if self.is_async:
            return asyncio.run(self.func(data, **kwargs))
        return self.func(data, **kwargs)


class Outbox:
    """Messages from any thread to the main thread, which alone may touch the socket.

    Why a list plus a self-pipe: zmq sockets are not thread-safe and an inproc PAIR would need
    the bodies serialised twice; a plain lock-protected list carries Python objects as they
    are, and one byte on a pipe wakes the main thread's ``zmq.Poller`` (which polls raw fds).
    The same pipe is the signal wake-up fd, so SIGTERM also wakes the poller at once.
    Progress is coalesced and log lines are capped, so a chatty PTS cannot exhaust memory.
    """

    def __init__(self, wake_fd: int) -> None:
        self._wake_fd = wake_fd
        self._lock = threading.Lock()
        self._items = []  # type: List[Outgoing]
        self._logs = 0
        self.dropped = 0

    def put(self, item: Outgoing) -> None:
        with self._lock:
            was_empty = not self._items
            kind = item[0]
            if kind == messages.TASK_PROGRESS and self._items and self._items[-1][0] == kind:
                self._items[-1] = item
            elif kind == messages.TASK_LOG and self._logs >= MAX_PENDING_LOGS:
                self.dropped += 1
                return
            else:
                self._items.append(item)
                self._logs += kind == messages.TASK_LOG
        if was_empty:
            # a full pipe holds wake-ups already: the main thread will look
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_fd, b"\0")

    def take(self) -> List[Outgoing]:
        with self._lock:
            items, self._items, self._logs = self._items, [], 0
        return items


class Task(NamedTuple):
    id: str
    op: str
    data: Any
    ctx: RunContext


class PtsThread(threading.Thread):
    """Runs tasks one at a time and posts each outcome to the outbox."""

    def __init__(self, calls: Dict[str, Call], outbox: Outbox) -> None:
        # daemon: a PTS that ignores cancel must not keep the process alive at exit
        super().__init__(name="pts", daemon=True)
        self.calls = calls
        self.outbox = outbox
        # SimpleQueue: a C lock and no Condition, about half the hand-off cost of queue.Queue
        self.inbox = queue.SimpleQueue()  # type: queue.SimpleQueue[Task]

    def run(self) -> None:
        while True:
            task = self.inbox.get()
            self.outbox.put(self.execute(task))

    def execute(self, task: Task) -> Outgoing:
        call = self.calls.get(task.op)
        if call is None:
            return (messages.TASK_REP, {"result": None}, task.id)   # no such hook: nothing to do
        try:
            result = call(task.data, task.ctx)
        except Exception as exc:  # the PTS's own failure: a clear message, traceback to stderr
            note("%s of %s raised:\n%s" % (task.op, call.entry, traceback.format_exc().rstrip()))
            code = ErrorCode.CANCELLED if task.ctx.cancelled else ErrorCode.PTS_ERROR
            body = {"code": code, "message": "%s: %s" % (type(exc).__name__, exc), "details": {}}
            return (messages.ERROR, body, task.id)
        return (messages.TASK_REP, {"result": result}, task.id)


class WorkerRuntime:
    """The main thread's loop: socket I/O, heartbeats, cancel and stop."""

    def __init__(self, socket: zmq.Socket[bytes], codec: Codec, pts: PtsThread, *,
                 wake_fd: int, heartbeat: float) -> None:
        self.socket = socket
        self.codec = codec
        self.pts = pts
        self.wake_fd = wake_fd
        self.heartbeat = heartbeat
        self.current = None  # type: Optional[Task]
        self.stopping = False
        self.signalled = False
        self.parent = os.getppid()

    def serve(self, hello: Dict[str, Any]) -> int:
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self.wake_fd, zmq.POLLIN)
        self.send(messages.WORKER_HELLO, hello)
        next_beat = time.monotonic() + self.heartbeat
        while not self.signalled and not (self.stopping and self.current is None):
            wait = max(0.0, next_beat - time.monotonic())
            ready = dict(poller.poll(int(wait * 1000) + 1))
            if self.wake_fd in ready:
                _drain_pipe(self.wake_fd)
            self.flush()
            if self.socket in ready:
                self.receive()
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self.heartbeat
                self.send(messages.WORKER_HEARTBEAT, {"busy": self.current is not None})
                self.check_parent()
        if self.signalled and self.current is not None:
            self.current.ctx.cancel()
        return EXIT_OK

    def check_parent(self) -> None:
        if os.getppid() != self.parent:   # the daemon died: never live on as an orphan
            note("the daemon (pid %d) is gone; exiting" % self.parent)
            self.signalled = True

    def receive(self) -> None:
        """One message: zmq_poll is level-triggered, so any further one is reported at once.

        Frame by frame with ``Frame.more`` rather than ``recv_multipart``: pyzmq's getsockopt
        builds an enum per call, which is a third of the receive's cost for small messages.
        """
        recv = self.socket.recv
        try:
            frame = recv(_RECV, copy=False)
            frames = [frame.bytes]
            while frame.more:
                frame = recv(_RECV, copy=False)
                frames.append(frame.bytes)
        except zmq.Again:   # reported readable, then not (a spurious wake-up): nothing to do
            return
        try:
            message = self.codec.decode(frames)
        except PnsError as exc:
            note("dropped a message: %s" % exc)
            return
        self.handle(message)

    def handle(self, message: Message) -> None:
        if message.type == messages.TASK_REQ:
            self.start_task(message)
        elif message.type == messages.TASK_CANCEL:
            if self.current is not None and message.re == self.current.id:
                self.current.ctx.cancel()
        elif message.type == messages.WORKER_STOP:
            self.stopping = True
        else:
            note("ignored a message of type %r" % message.type)

    def start_task(self, message: Message) -> None:
        body = message.body if isinstance(message.body, dict) else {}
        op = body.get("op")
        if op not in OPS:
            self.send_error(message.id, ErrorCode.BAD_REQUEST, "unknown task op %r" % (op,))
            return
        if self.current is not None or self.stopping:
            self.send_error(message.id, ErrorCode.BUSY, "the worker is busy or stopping")
            return
        job = body.get("job")
        ctx = RunContext(job if isinstance(job, str) else "",
                         on_progress=self._progress_sink(message.id),
                         on_log=self._log_sink(message.id))
        self.current = Task(message.id, op, body.get("data"), ctx)
        self.pts.inbox.put(self.current)

    def _progress_sink(self, task_id: str) -> Callable[[int, str], None]:
        outbox = self.pts.outbox
        return lambda percent, text: outbox.put(
            (messages.TASK_PROGRESS, {"percent": percent, "message": text[:MAX_LINE]}, task_id))

    def _log_sink(self, task_id: str) -> Callable[[str], None]:
        outbox = self.pts.outbox
        return lambda line: outbox.put((messages.TASK_LOG, {"line": line[:MAX_LINE]}, task_id))

    def flush(self) -> None:
        for msg_type, body, re in self.pts.outbox.take():
            if msg_type in (messages.TASK_REP, messages.ERROR):
                if self.current is None or re != self.current.id:
                    continue
                self.current = None
                self.send_reply(msg_type, body, re)
            else:
                self.send(msg_type, body, re)

    def send_reply(self, msg_type: str, body: Any, re: Optional[str]) -> None:
        """The task's outcome; a result that cannot travel becomes a pts_error instead."""
        try:
            frames = self.codec.encode(msg_type, body, re=re)
        except ProtocolError as exc:
            note("the result cannot be encoded: %s" % exc.message)
            self.send_error(re, ErrorCode.PTS_ERROR, "the result cannot be encoded: %s"
                            % exc.message.replace("body cannot be encoded: ", ""))
            return
        size = sum(len(frame) for frame in frames)
        if size > self.codec.max_bytes:
            self.send_error(re, ErrorCode.PTS_ERROR, "the result of %d bytes exceeds the "
                            "message limit of %d bytes" % (size, self.codec.max_bytes))
            return
        self._send_frames(frames)

    def send_error(self, re: Optional[str], code: str, text: str) -> None:
        self.send(messages.ERROR, {"code": code, "message": text, "details": {}}, re)

    def send(self, msg_type: str, body: Any, re: Optional[str] = None) -> None:
        try:
            frames = self.codec.encode(msg_type, body, re=re, msg_id=new_message_id())
        except ProtocolError as exc:
            note("cannot encode %s: %s" % (msg_type, exc.message))
            return
        self._send_frames(frames)

    def _send_frames(self, frames: List[bytes]) -> None:
        """Send one message without blocking; frame by frame with int flags (see _SEND_MORE).

        The first frame decides: ZeroMQ queues a multipart message whole or not at all.
        """
        send = self.socket.send
        try:
            for frame in frames[:-1]:
                send(frame, _SEND_MORE, copy=len(frame) < COPY_THRESHOLD)
            send(frames[-1], _SEND_LAST, copy=len(frames[-1]) < COPY_THRESHOLD)
        except zmq.Again:
            note("dropped an outgoing message: the daemon is not reading")


def _drain_pipe(fd: int) -> None:
    # One read takes every wake-up byte there is; only a full buffer means there may be more.
    with contextlib.suppress(BlockingIOError):
        while len(os.read(fd, 4096)) == 4096:
            pass


def load_calls(args: argparse.Namespace) -> Dict[str, Call]:
    entries = {"run": args.entry, "init": args.init, "config": args.config, "clean": args.clean}
    return {op: Call(entry) for op, entry in entries.items() if entry}


def read_key(path: str) -> bytes:
    """The signing key: the file's content, whitespace stripped (empty means signing off)."""
    with open(path, "rb") as handle:
        return handle.read().strip()


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m protocols.worker",
                                     description="Serve a PTS callable to a PNS daemon.")
    parser.add_argument("--connect", required=True, help="the daemon's worker endpoint")
    parser.add_argument("--entry", required=True, help="the run callable, module:function")
    for hook in ("init", "config", "clean"):
        parser.add_argument("--" + hook, help="the %s hook, module:function" % hook)
    parser.add_argument("--key-file", required=True, help="the signing key (empty: no signing)")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between beats")
    parser.add_argument("--id", default="", help="routing id the daemon knows this worker by")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    return parser.parse_args(argv)


def _install_signals(wake_fd: int, runtime_box: List[WorkerRuntime]) -> None:
    def on_signal(signum: int, frame: Any) -> None:
        for runtime in runtime_box:
            runtime.signalled = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    signal.set_wakeup_fd(wake_fd, warn_on_full_buffer=False)


def _prepare(args: argparse.Namespace) -> Tuple[Dict[str, Call], bytes]:
    """Load the key and callables and run init; raise SystemExit with the code on failure."""
    try:
        key = read_key(args.key_file)
    except OSError as exc:
        note("cannot read the key file %s: %s" % (args.key_file, exc.strerror))
        raise SystemExit(EXIT_BAD_ENTRY) from exc
    try:
        calls = load_calls(args)
    except EntryError as exc:
        note("cannot load the PTS: %s" % exc)
        raise SystemExit(EXIT_BAD_ENTRY) from exc
    if "init" in calls:
        try:
            calls["init"](None, RunContext())
        except Exception as exc:  # a failing init means this worker cannot serve
            note("init %s failed:\n%s" % (args.init, traceback.format_exc().rstrip()))
            raise SystemExit(EXIT_INIT_FAILED) from exc
    return calls, key


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    calls, key = _prepare(args)
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    runtimes = []  # type: List[WorkerRuntime]
    _install_signals(write_fd, runtimes)
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    if args.id:
        socket.setsockopt(zmq.ROUTING_ID, args.id.encode("utf-8"))
    socket.setsockopt(zmq.LINGER, FINAL_LINGER_MS)
    socket.setsockopt(zmq.MAXMSGSIZE, args.max_bytes + 2**20)
    socket.connect(args.connect)
    pts = PtsThread(calls, Outbox(write_fd))
    pts.start()
    runtime = WorkerRuntime(socket, Codec(key, max_bytes=args.max_bytes), pts,
                            wake_fd=read_fd, heartbeat=args.heartbeat)
    runtimes.append(runtime)
    hello = {"pid": os.getpid(), "id": args.id, "entry": args.entry,
             "hooks": sorted(op for op in calls if op != "run"), "python": sys.version,
             "capabilities": CAPABILITIES}
    try:
        return runtime.serve(hello)
    finally:
        socket.close()
        context.term()


if __name__ == "__main__":
    sys.exit(main())
