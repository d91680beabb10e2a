"""The stdio worker runtime: serve one PTS callable to a PNS daemon over stdin and stdout.

Run as ``python -m protocols.stdioworker --connect stdio --entry module:function --key-file
PATH --id ID [--init m:f] [--config m:f] [--clean m:f] [--heartbeat 1.0] [--max-bytes N]``.
The same worker protocol as :mod:`protocols.worker`, the same messages signed the same way,
framed as records on the pipes the daemon started it with (SPEC.md, "The stdio transport").
It needs only msgpack and runs on Python 3.6 and later: no pyzmq, no ``from __future__
import annotations`` here or in what it imports.

Threads: the main thread reads the daemon's records and runs each task itself, so a short run
costs no thread hand-off; once a task has run for a tick (at most 0.1 s), the keeper thread
reads the stream for it (cancel, stop, busy answers) until it ends, like the ZeroMQ runtime's
keeper. The beat thread sends the heartbeats. A record goes out whole under one lock, from
whichever thread. Owns nothing of the daemon's state.
"""

import argparse
import asyncio
import collections
import inspect
import os
import select
import signal
import sys
import threading
import traceback
from typing import Any, Deque, Dict, List, NoReturn, Optional

from protocols import messages
from protocols.codec import DEFAULT_MAX_BYTES, Codec, Message, new_message_id
from protocols.context import EntryError, RunContext, accepts_ctx, load_entry
from protocols.errors import ErrorCode, PnsError, ProtocolError
from protocols.stdioframe import SLACK, FrameReader, FramingError, pack_bytes
from protocols.version import WORKER_PROTOCOLS

EXIT_OK = 0
EXIT_BROKEN_STREAM = 1        # the daemon's records cannot be read
EXIT_BAD_ENTRY = 3
EXIT_INIT_FAILED = 4
EXIT_REFUSED = 6              # the daemon refused the hello (no shared protocol version)
OPS = ("run", "init", "config", "clean")
CAPABILITIES = ["cancel", "progress", "log"]
MAX_LINE = 16 * 1024          # characters of one task.log line
READ_CHUNK = 1 << 20         # bytes one read may take: a large task arrives in few reads
MAX_TICK = 0.1                # seconds a task runs before the keeper reads the stream for it


def note(text: str) -> None:
    """One line on stderr: the daemon forwards the worker's stderr into its log."""
    sys.stderr.write("pns-stdio-worker[%d]: %s\n" % (os.getpid(), text))
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
        if not self.is_async:
            return self.func(data, **kwargs)
        loop = asyncio.new_event_loop()      # asyncio.run is 3.7+
        try:
            return loop.run_until_complete(self.func(data, **kwargs))
        finally:
            loop.close()


class Task:
    __slots__ = ("ctx", "data", "finished", "id", "op")

    def __init__(self, task_id: str, op: str, data: Any, ctx: RunContext) -> None:
        self.id, self.op, self.data, self.ctx = task_id, op, data, ctx
        self.finished = False


class Link:
    """The two pipes: records out under a lock (any thread), records in (the reader)."""

    def __init__(self, read_fd: int, write_fd: int, key: bytes, max_bytes: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        # the pipes are private to the daemon and this process, as an ipc:// socket's directory
        # is: blob frames go unsigned, their lengths signed (SPEC.md, "Blob frames on ipc://")
        self.out_codec = Codec(key, max_bytes=max_bytes, local=True)     # under the lock only
        self.in_codec = Codec(key, max_bytes=max_bytes, local=True)      # by the reader only
        self.reader = FrameReader(max_bytes + SLACK)
        self.lock = threading.Lock()

    def send(self, msg_type: str, body: Any, re: Optional[str] = None,
             msg_id: Optional[str] = None) -> None:
        """Encode and write one record; raise ProtocolError if it cannot be encoded."""
        with self.lock:
            frames = self.out_codec.encode(msg_type, body, re=re, msg_id=msg_id or new_message_id())
            self._write(pack_bytes(frames))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.write_fd, view)
            except BrokenPipeError:             # the daemon is gone: nobody to serve
                os._exit(EXIT_OK)
            view = view[written:]

    def receive(self) -> Optional[List[List[bytes]]]:
        """The messages the next chunk completes; None at the end of the stream."""
        data = os.read(self.read_fd, READ_CHUNK)
        if not data:
            if self.reader.pending():
                note("the stream ended inside a record (%d bytes)" % self.reader.pending())
            return None
        return self.reader.feed(data)


class StdioWorker:
    """Serves tasks over a :class:`Link`; see the module docstring for its threads.

    ``reading`` is the reader's role: its holder alone reads the stream and handles messages
    (the main thread, except while it runs a task; then the keeper, once the task has run for
    a tick). ``backlog`` holds messages read and not yet handled, in order.
    """

    def __init__(self, link: Link, calls: Dict[str, Call], heartbeat: float) -> None:
        self.link = link
        self.calls = calls
        self.heartbeat = heartbeat
        self.tick = max(0.01, min(MAX_TICK, heartbeat / 4))
        self.current = None             # type: Optional[Task]
        self.reading = threading.Lock()
        self.backlog: Deque[List[bytes]] = collections.deque()
        self.wake_read, self.wake_write = os.pipe()   # calls the keeper off when a task ends
        self.stopping = False
        self.hello_id = new_message_id()
        self.protocol = 1
        self.parent = os.getppid()

    def serve(self, hello: Dict[str, Any]) -> int:
        self.reading.acquire()
        self.link.send(messages.WORKER_HELLO, hello, msg_id=self.hello_id)
        for target, name in ((self.keep, "keeper"), (self.beat_loop, "beat")):
            threading.Thread(target=self.guard, args=(target,), name=name, daemon=True).start()
        while not self.stopping:
            while not self.backlog:
                self.read(block=True)
            self.receive(self.backlog.popleft())
        self.link.lock.acquire()    # held to the end: no record is cut off by the exit
        return EXIT_OK

    def read(self, block: bool) -> None:
        """Read what the stream has into the backlog (waiting up to a tick unless ``block``);
        leave at its end or when it breaks. Only the holder of ``reading`` calls it."""
        if not block:
            ready = select.select([self.link.read_fd, self.wake_read], [], [], self.tick)[0]
            if self.wake_read in ready:
                os.read(self.wake_read, 4096)
            if self.link.read_fd not in ready:
                return
        try:
            batch = self.link.receive()
        except FramingError as exc:
            note("broken stream from the daemon: %s" % exc)
            self.leave(EXIT_BROKEN_STREAM)
        if batch is None:                   # stdin closed: the daemon is gone
            self.leave(EXIT_OK)
        self.backlog.extend(batch)

    def keep(self) -> None:
        """Stand in as the reader while a task runs for longer than a tick, so that cancel,
        stop and busy answers are not held up by it."""
        seen = None     # type: Optional[Task]
        while True:
            if select.select([self.wake_read], [], [], self.tick)[0]:
                os.read(self.wake_read, 4096)
            task = self.current
            if task is None or task.finished or task is not seen:
                seen = task         # a new task: stand in if it still runs a tick later
                continue
            if not self.reading.acquire(False):
                continue
            try:
                while not task.finished:
                    while self.backlog and not task.finished:
                        self.receive(self.backlog.popleft())
                    if not task.finished:
                        self.read(block=False)
            finally:
                self.reading.release()
            seen = None

    def guard(self, target: Any) -> None:
        """A thread's boundary: a worker that lost a thread cannot serve; leave."""
        try:
            target()
        except Exception:  # any failure here leaves the worker deaf or mute
            note("thread failed:\n%s" % traceback.format_exc().rstrip())
            os._exit(EXIT_BROKEN_STREAM)

    def beat_loop(self) -> None:
        wait = threading.Event()
        while not wait.wait(self.heartbeat):
            self.link.send(messages.WORKER_HEARTBEAT, {"busy": self.current is not None})
            if os.getppid() != self.parent:     # the daemon died: never live on as an orphan
                note("the daemon (pid %d) is gone; exiting" % self.parent)
                self.leave(EXIT_OK)

    def leave(self, code: int) -> NoReturn:
        """Cancel what runs and exit at once (from any thread)."""
        task = self.current
        if task is not None:
            task.ctx.cancel()
        sys.stderr.flush()
        os._exit(code)

    def receive(self, frames: List[bytes]) -> None:
        try:
            message = self.link.in_codec.decode(frames)
        except PnsError as exc:
            note("dropped a message: %s" % exc)
            return
        handler = {messages.TASK_REQ: self.on_task, messages.TASK_CANCEL: self.on_cancel,
                   messages.WORKER_STOP: self.on_stop, messages.WORKER_WELCOME: self.on_welcome,
                   messages.ERROR: self.on_error}.get(message.type)
        if handler is None:
            note("ignored a message of type %r" % message.type)
            return
        handler(message)

    def on_task(self, message: Message) -> None:
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
        self.run_task(Task(message.id, op, body.get("data"), ctx))

    def on_cancel(self, message: Message) -> None:
        task = self.current
        if task is not None and message.re == task.id:
            task.ctx.cancel()

    def on_stop(self, message: Message) -> None:
        self.stopping = True      # after the task in hand: its answer is still sent

    def on_welcome(self, message: Message) -> None:
        body = message.body if isinstance(message.body, dict) else {}
        if message.re == self.hello_id and isinstance(body.get("protocol"), int):
            self.protocol = body["protocol"]

    def on_error(self, message: Message) -> None:
        body = message.body if isinstance(message.body, dict) else {}
        if message.re != self.hello_id:
            note("ignored an error answering %r" % message.re)
            return
        note("the daemon refused this worker (%s): %s" % (body.get("code"), body.get("message")))
        self.leave(EXIT_REFUSED)        # before any task: nothing runs that could answer

    def run_task(self, task: Task) -> None:
        """Run ``task`` here, the reader's role left to the keeper meanwhile; answer it."""
        self.current = task
        self.reading.release()
        try:
            msg_type, body = self.execute(task)
        finally:
            task.finished = True
            if not self.reading.acquire(False):   # the keeper stands in: call it off
                os.write(self.wake_write, b"\0")
                self.reading.acquire()
            self.current = None
        try:
            self.link.send(msg_type, body, re=task.id)
        except ProtocolError as exc:     # checked before sending: a result that cannot travel
            if exc.code == ErrorCode.TOO_LARGE:
                text = ("the result of %d bytes exceeds the message limit of %d bytes"
                        % (exc.details["size"], exc.details["limit"]))
            else:
                text = "the result cannot be encoded: %s" % exc.message
            note(text)
            self.send_error(task.id, ErrorCode.PTS_ERROR, text)

    def execute(self, task: Task) -> Any:
        call = self.calls.get(task.op)
        if call is None:
            return messages.TASK_REP, {"result": None}   # no such hook: nothing to do
        try:
            result = call(task.data, task.ctx)
        except Exception as exc:  # the PTS's own failure: a clear message, traceback to stderr
            note("%s of %s raised:\n%s" % (task.op, call.entry, traceback.format_exc().rstrip()))
            code = ErrorCode.CANCELLED if task.ctx.cancelled else ErrorCode.PTS_ERROR
            return messages.ERROR, {"code": code, "message": "%s: %s" % (type(exc).__name__, exc),
                                    "details": {}}
        return messages.TASK_REP, {"result": result}

    def send_error(self, re: Optional[str], code: str, text: str) -> None:
        self.link.send(messages.ERROR, {"code": code, "message": text, "details": {}}, re)

    def _progress_sink(self, task_id: str) -> Any:
        return lambda percent, text: self.link.send(
            messages.TASK_PROGRESS, {"percent": percent, "message": text[:MAX_LINE]}, task_id)

    def _log_sink(self, task_id: str) -> Any:
        return lambda line: self.link.send(messages.TASK_LOG, {"line": line[:MAX_LINE]},
                                           task_id)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m protocols.stdioworker",
                                     description="Serve a PTS callable to a PNS daemon "
                                                 "over stdin and stdout.")
    parser.add_argument("--connect", required=True, choices=["stdio"],
                        help="the transport: this runtime speaks stdio only")
    parser.add_argument("--entry", required=True, help="the run callable, module:function")
    for hook in ("init", "config", "clean"):
        parser.add_argument("--" + hook, help="the %s hook, module:function" % hook)
    parser.add_argument("--key-file", required=True, help="the signing key (empty: no signing)")
    parser.add_argument("--heartbeat", type=float, default=1.0, help="seconds between beats")
    parser.add_argument("--id", default="", help="the name the daemon knows this worker by")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES)
    return parser.parse_args(argv)


def take_pipes() -> Any:
    """Move the pipes off fds 0 and 1: a PTS's print goes to stderr, never into the stream."""
    read_fd, write_fd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return read_fd, write_fd


def prepare(args: argparse.Namespace) -> Any:
    """The key and the callables, init run; raise SystemExit with the code on failure."""
    try:
        with open(args.key_file, "rb") as handle:
            key = handle.read().strip()
    except OSError as exc:
        note("cannot read the key file %s: %s" % (args.key_file, exc.strerror))
        raise SystemExit(EXIT_BAD_ENTRY) from exc
    entries = {"run": args.entry, "init": args.init, "config": args.config, "clean": args.clean}
    try:
        calls = {op: Call(entry) for op, entry in entries.items() if entry}
    except EntryError as exc:
        note("cannot load the PTS: %s" % exc)
        raise SystemExit(EXIT_BAD_ENTRY) from exc
    if "init" in calls:
        try:
            calls["init"](None, RunContext())
        except Exception as exc:  # a failing init means this worker cannot serve
            note("init %s failed:\n%s" % (args.init, traceback.format_exc().rstrip()))
            raise SystemExit(EXIT_INIT_FAILED) from exc
    return key, calls


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    read_fd, write_fd = take_pipes()
    key, calls = prepare(args)
    worker = StdioWorker(Link(read_fd, write_fd, key, args.max_bytes), calls, args.heartbeat)

    def on_signal(signum: int, frame: Any) -> None:
        worker.leave(EXIT_OK)       # SIGTERM, SIGINT, SIGHUP: cancel and exit at once

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    hello = {"pid": os.getpid(), "id": args.id, "entry": args.entry,
             "hooks": sorted(op for op in calls if op != "run"), "python": sys.version,
             "capabilities": CAPABILITIES, "protocols": list(WORKER_PROTOCOLS)}
    return worker.serve(hello)


if __name__ == "__main__":
    sys.exit(main())
