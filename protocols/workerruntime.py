"""The worker runtime's serving loop: one PTS callable served over a DEALER socket.

:class:`WorkerRuntime` receives ``task.req`` messages, runs each task and answers it, sends
heartbeats, progress and log lines, and obeys cancel and stop (see SPEC.md, "Worker protocol").
Tasks that arrive while one runs (the daemon sends them only for a PTS with ``prefetch``) wait
in order and run after it; a cancelled one is answered at once, a stop answers them ``busy``.

Threads: the main thread owns the socket and runs each task itself, so a short run costs no
thread hand-off. While it runs one, a :class:`Keeper` thread watches; once a task has run for a
tick (at most 0.1 s), the keeper takes the socket over (heartbeats, progress, cancel, stop, busy
answers) and hands it back when the task ends, so a long run never silences the heartbeat;
the keeper, the task it watches and the outbox a PTS reports through are
:mod:`protocols.keeper`'s.
A remote worker's joining and rejoining is :mod:`protocols.membership`'s, driven from the poll
loop. The process entry (options, key, signals, init) is :mod:`protocols.worker`. Imports only
``protocols``, pyzmq, msgpack and the stdlib (Python 3.8+).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import os
import sys
import threading
import time
import traceback
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import zmq

from protocols import messages
from protocols.codec import Codec, Message, new_message_id
from protocols.context import RunContext, accepts_ctx, load_entry
from protocols.errors import ErrorCode, PnsError, ProtocolError
from protocols.keeper import Keeper, Outbox, Outgoing, Task, drain_pipe, make_pipe, note, wake_up
from protocols.membership import EXIT_REFUSED, Membership
from protocols.pump import recv_frames, send_frames

EXIT_OK = 0
OPS = ("run", "init", "config", "clean")
CAPABILITIES = ["cancel", "progress", "log"]
MAX_LINE = 16 * 1024          # characters of one task.log line
MAX_TICK = 0.1                # seconds a task runs before the keeper takes the socket over
_POLLIN = int(zmq.POLLIN)     # a plain int: pyzmq's enum flags cost a construction per use


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


class WorkerRuntime:
    """Socket I/O, heartbeats, cancel and stop; tasks run on the thread that calls serve.

    ``owner`` is held by the thread using the socket and codec (ZeroMQ sockets may change
    threads, never be shared): the main thread, except while it runs a task.
    """

    def __init__(self, socket: zmq.Socket[bytes], codec: Codec, calls: Dict[str, Call], *,
                 signal_fd: int, heartbeat: float,
                 membership: Optional[Membership] = None) -> None:
        self.socket = socket
        self.codec = codec
        self.calls = calls
        self.signal_fd = signal_fd
        self.heartbeat = heartbeat
        self.owner = threading.Lock()
        self.wake_fd, wake_write = make_pipe()
        self.outbox = Outbox(wake_write)
        self.current = None  # type: Optional[Task]
        # tasks sent while one runs (the PTS's prefetch): run in order once it ends
        self.queued: Deque[Task] = collections.deque()
        self.stopping = False
        self.signalled = False
        self.hello_id = new_message_id()
        self.parent = os.getppid()
        self.next_beat = 0.0
        self.exit_code = EXIT_OK
        self.membership = membership     # a remote worker's joining; None: started by the daemon
        self._idle_items = [(socket, _POLLIN), (signal_fd, _POLLIN)]  # type: List[Any]
        if membership is not None:
            self._idle_items.append((membership.monitor, _POLLIN))
        self._busy_items = [*self._idle_items, (self.wake_fd, _POLLIN)]

    def serve(self, hello: Dict[str, Any]) -> int:
        self.owner.acquire()
        Keeper(self, tick=max(0.01, min(MAX_TICK, self.heartbeat / 4))).start()
        if self.membership is None:     # a remote worker says hello once it is connected
            self._send_frames(self.codec.encode(messages.WORKER_HELLO, hello,
                                                msg_id=self.hello_id))
        self.next_beat = time.monotonic() + self.heartbeat
        while not (self.signalled or self.stopping):
            while self.queued and not (self.signalled or self.stopping):
                self.run_task(self.queued.popleft())
            self.poll(self._idle_items)
        return self.exit_code

    def poll(self, items: List[Tuple[Any, int]]) -> None:
        """Wait for a message, a signal or a wake-up up to the next heartbeat; handle it."""
        wait = self.next_beat - time.monotonic()
        for item, _events in zmq.zmq_poll(items, max(0, int(wait * 1000) + 1)):
            if item is self.socket:
                self.receive()
            elif item == self.signal_fd:
                drain_pipe(self.signal_fd)      # only signals write there
                self.signalled = True
            elif item == self.wake_fd:
                drain_pipe(self.wake_fd)
            elif self.membership is not None and self.membership.on_event():
                self.refuse(self.membership.refusal)
        membership = self.membership
        if membership is not None and membership.due(self.current is not None):
            membership.join(self.send)       # (again, after a stop or a reconnect)
            self.next_beat = time.monotonic() + self.heartbeat
        if time.monotonic() >= self.next_beat:
            self.next_beat = time.monotonic() + self.heartbeat
            if membership is None:
                self.check_parent()
            if membership is None or membership.joined:
                self.send(messages.WORKER_HEARTBEAT, {"busy": self.current is not None})

    def refuse(self, why: str) -> None:
        """The daemon refused this worker (no shared protocol version, a remote join, a CURVE
        key): say why and end with EXIT_REFUSED."""
        note(why)
        self.exit_code = EXIT_REFUSED
        self.signalled = True

    def hello_refused(self, message: Message) -> bool:
        """Whether ``message`` (an ``error``) answers this worker's hello; if so, refuse."""
        if self.membership is not None:
            if not self.membership.answers_hello(message.re, message.body):
                return False
            self.refuse(self.membership.refusal)
            return True
        if message.re != self.hello_id:
            return False
        body = message.body if isinstance(message.body, dict) else {}
        self.refuse("the daemon refused this worker (%s): %s"
                    % (body.get("code"), body.get("message")))
        return True

    def stand_in(self, task: Task) -> None:
        """Serve the socket while the main thread runs ``task``; the keeper holds ``owner``."""
        self.outbox.listen(True)
        try:
            while not task.finished:
                self.flush()
                if self.signalled:
                    self.exit_now()
                self.poll(self._busy_items)
        finally:
            self.outbox.listen(False)

    def exit_now(self) -> None:
        """A signal or a vanished daemon during a task: cancel it and leave at once."""
        if self.current is not None:
            self.current.ctx.cancel()
        with contextlib.suppress(Exception):    # the streams may be closed: leave anyway
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(self.exit_code)

    def check_parent(self) -> None:
        if os.getppid() != self.parent:   # the daemon died: never live on as an orphan
            note("the daemon (pid %d) is gone; exiting" % self.parent)
            self.signalled = True

    def receive(self) -> None:
        """One message: zmq_poll is level-triggered, so any further one is reported at once."""
        try:
            frames = recv_frames(self.socket)
        except zmq.Again:   # reported readable, then not (a spurious wake-up): nothing to do
            return
        try:
            message = self.codec.decode(frames)
        except PnsError as exc:
            if self.membership is not None and self.membership.refused_by(frames):
                self.refuse(self.membership.refusal)
                return
            note("dropped a message: %s" % exc)
            return
        self.handle(message)

    def handle(self, message: Message) -> None:
        if message.type == messages.TASK_REQ:
            self.start_task(message)
        elif message.type == messages.TASK_CANCEL:
            if self.current is not None and message.re == self.current.id:
                self.current.ctx.cancel()
            for task in [t for t in self.queued if t.id == message.re]:
                self.queued.remove(task)        # not started: answered as cancelled at once
                self.send_error(task.id, ErrorCode.CANCELLED, "cancelled before it started")
        elif message.type == messages.WORKER_STOP:
            while self.queued:                  # not started: the daemon hands them on
                self.send_error(self.queued.popleft().id, ErrorCode.BUSY, "the worker is stopping")
            if self.membership is not None:    # a remote worker leaves the pool and rejoins
                self.membership.left()
            else:
                self.stopping = True
        elif message.type == messages.WORKER_WELCOME:
            pass            # this runtime speaks every version it announces alike
        elif message.type == messages.ERROR and self.hello_refused(message):
            pass
        else:
            note("ignored a message of type %r" % message.type)

    def start_task(self, message: Message) -> None:
        body = message.body if isinstance(message.body, dict) else {}
        op = body.get("op")
        if op not in OPS:
            self.send_error(message.id, ErrorCode.BAD_REQUEST, "unknown task op %r" % (op,))
            return
        if self.stopping:
            self.send_error(message.id, ErrorCode.BUSY, "the worker is stopping")
            return
        job_id = body.get("job")
        job_id = job_id if isinstance(job_id, str) else ""
        call = self.calls.get(op)
        if call is not None and call.wants_ctx:
            ctx = RunContext(job_id, on_progress=self._progress_sink(message.id),
                             on_log=self._log_sink(message.id))
        else:       # a callable without ctx reports nothing: no sinks to make (most tasks)
            ctx = RunContext(job_id)
        task = Task(message.id, op, body.get("data"), ctx)
        if self.current is not None or self.queued:
            self.queued.append(task)            # prefetched: runs after the current one
            return
        self.run_task(task)

    def run_task(self, task: Task) -> None:
        """Run ``task`` here, the socket left to the keeper meanwhile; then send its outcome."""
        self.current = task
        self.owner.release()
        try:
            msg_type, body = self.execute(task)
        finally:
            task.finished = True
            if not self.owner.acquire(False):   # the keeper stands in: call it off
                wake_up(self.outbox.wake_fd)
                self.owner.acquire()
            self.current = None
        self.send_reply(msg_type, body, task.id, events=self.outbox.take())

    def execute(self, task: Task) -> Tuple[str, Any]:
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

    def _progress_sink(self, task_id: str) -> Callable[[int, str], None]:
        outbox = self.outbox
        return lambda percent, text: outbox.put(
            (messages.TASK_PROGRESS, {"percent": percent, "message": text[:MAX_LINE]}, task_id))

    def _log_sink(self, task_id: str) -> Callable[[str], None]:
        outbox = self.outbox
        return lambda line: outbox.put((messages.TASK_LOG, {"line": line[:MAX_LINE]}, task_id))

    def flush(self) -> None:
        for msg_type, body, re in self.outbox.take():
            self.send(msg_type, body, re)

    def send_reply(self, msg_type: str, body: Any, re: Optional[str], *,
                   events: Sequence[Outgoing] = ()) -> None:
        """The task's outcome, after what the task reported (``events``).

        A ``task.rep`` carries those progress and log lines itself (one message, not one
        each); an error follows them. A result that cannot travel becomes a pts_error.
        """
        if msg_type == messages.TASK_REP:
            frames, problem = self._reply_frames(body, re, events)
            if frames is not None:
                self._send_frames(frames)
                return
            msg_type, body = messages.ERROR, {"code": ErrorCode.PTS_ERROR, "message": problem,
                                              "details": {}}
        for kind, item, item_re in events:
            self.send(kind, item, item_re)
        self.send(msg_type, body, re)

    def _reply_frames(self, body: Any, re: Optional[str],
                      events: Sequence[Outgoing]) -> Tuple[Optional[List[bytes]], str]:
        """The frames of a ``task.rep`` with its events, or None and why it cannot travel."""
        if events:
            body = dict(body, events=[[kind, item] for kind, item, _re in events])
        try:
            return self.codec.encode(messages.TASK_REP, body, re=re), ""
        except ProtocolError as exc:
            if exc.code == ErrorCode.TOO_LARGE:   # checked before sending: never dropped
                return None, ("the result of %d bytes exceeds the message limit of %d bytes"
                              % (exc.details["size"], exc.details["limit"]))
            note("the result cannot be encoded: %s" % exc.message)
            return None, "the result cannot be encoded: %s" % exc.message.replace(
                "body cannot be encoded: ", "")

    def send_error(self, re: Optional[str], code: str, text: str) -> None:
        self.send(messages.ERROR, {"code": code, "message": text, "details": {}}, re)

    def send(self, msg_type: str, body: Any, re: Optional[str] = None, *,
             msg_id: Optional[str] = None) -> None:
        try:
            frames = self.codec.encode(msg_type, body, re=re, msg_id=msg_id or new_message_id())
        except ProtocolError as exc:
            note("cannot encode %s: %s" % (msg_type, exc.message))
            return
        self._send_frames(frames)

    def _send_frames(self, frames: List[bytes]) -> None:
        try:
            send_frames(self.socket, frames)
        except zmq.Again:
            note("dropped an outgoing message: the daemon is not reading")
