"""The worker runtimes driven by a test playing the daemon: `python -m protocols.worker` over a
ROUTER this test binds, and `python -m protocols.stdioworker` over its stdin and stdout (every
test runs on both, unless it says why not)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from protocols import messages
from protocols.codec import Codec, Message, new_message_id
from protocols.stdioframe import FrameReader, pack_bytes

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
KEY = b"runtime-test-key"
WAIT = 20.0

PTS_MODULE = '''
import os, time

class Opaque:
    pass

def act(data, ctx):
    do = data.get("do")
    if do == "echo":
        return data.get("value")
    if do == "boom":
        raise ValueError("bad value 42")
    if do == "opaque":
        return Opaque()
    if do == "chatty":
        ctx.progress(50, "half way")
        ctx.log("a line from the PTS")
        return "chatted"
    if do == "chatty_fail":
        ctx.log("about to fail")
        raise ValueError("failed after a line")
    if do == "wait_cancel":
        ctx.progress(1, "started")
        ctx.wait_cancelled(WAIT)
        return ctx.cancelled
    if do == "pid":
        return os.getpid()
    if do == "print":
        print("printed by the PTS")
        return "printed"
    if do == "stubborn":
        ctx.progress(1, "started")
        time.sleep(WAIT)          # ignores cancel
        return "finished"
    if do == "many_logs":
        for n in range(data["lines"]):
            ctx.log("line %d" % n)
        return "logged"
    raise KeyError(do)

WAIT = 20.0

def configure(data):
    return "configured"

def failing_init(data):
    raise RuntimeError("no licence")
'''


class Peer:
    """The daemon's side of one worker: a ROUTER and the worker process."""

    transport = "zmq"

    def __init__(self, tmp_path: Path, socket: zmq.Socket[bytes]) -> None:
        self.tmp_path = tmp_path
        self.socket = socket
        self.codec = Codec(KEY, local=True)    # as the daemon's worker host (ipc://)
        self.endpoint = f"ipc://{tmp_path}/w.sock"
        self.key_file = tmp_path / "key"
        self.key_file.write_bytes(KEY)
        self.key_file.chmod(0o600)
        self.process: subprocess.Popen[bytes] | None = None
        self.identity = b"w0.1"

    def spawn(self, *extra: str, entry: str = "ptsmod:act",
              wrapper: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.tmp_path), str(REPO)])}
        argv = [*wrapper, sys.executable, "-m", "protocols.worker", "--connect", self.endpoint,
                "--entry", entry, "--key-file", str(self.key_file), "--id", "w0.1",
                "--heartbeat", "0.2", *extra]
        self.process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
        return self.process

    def receive(self, *, skip_heartbeats: bool = True, timeout: float = WAIT) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.socket.poll(int(left * 1000)):
                raise AssertionError("no message from the worker in time")
            identity, *frames = self.socket.recv_multipart()
            assert identity == self.identity
            message = self.codec.decode(frames)
            if not (skip_heartbeats and message.type == messages.WORKER_HEARTBEAT):
                return message

    def send(self, msg_type: str, body: Any, *, re: str | None = None,
             codec: Codec | None = None) -> str:
        msg_id = new_message_id()
        self.send_frames((codec or self.codec).encode(msg_type, body, re=re, msg_id=msg_id))
        return msg_id

    def send_frames(self, frames: list[Any]) -> None:
        self.socket.send_multipart([self.identity, *frames])

    def frames(self, timeout: float) -> list[bytes]:
        if not self.socket.poll(int(max(timeout, 0) * 1000)):
            raise AssertionError("no message from the worker in time")
        identity, *frames = self.socket.recv_multipart()
        assert identity == self.identity
        return frames

    def task(self, data: Any, op: str = "run") -> str:
        return self.send(messages.TASK_REQ, {"op": op, "data": data, "timeout": 5, "job": "j1"})

    def started(self) -> Message:
        self.spawn()
        hello = self.receive()
        assert hello.type == messages.WORKER_HELLO
        return hello

    def finish(self) -> tuple[int, str]:
        assert self.process is not None
        _out, err = self.process.communicate(timeout=WAIT)
        return self.process.returncode, err.decode()

    def said_nothing(self) -> bool:
        return not self.socket.poll(0)


class StdioPeer(Peer):
    """The daemon's side of one stdio worker: records on the worker's stdin and stdout."""

    transport = "stdio"

    def __init__(self, tmp_path: Path, socket: zmq.Socket[bytes]) -> None:
        super().__init__(tmp_path, socket)
        self.reader = FrameReader(2**27)
        self.inbox: list[list[bytes]] = []

    def spawn(self, *extra: str, entry: str = "ptsmod:act",
              wrapper: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.tmp_path), str(REPO)])}
        argv = [*wrapper, sys.executable, "-m", "protocols.stdioworker", "--connect", "stdio",
                "--entry", entry, "--key-file", str(self.key_file), "--id", "w0.1",
                "--heartbeat", "0.2", *extra]
        self.process = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return self.process

    def frames(self, timeout: float) -> list[bytes]:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while not self.inbox:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.process.stdout], [], [], left)[0]:
                raise AssertionError("no message from the worker in time")
            data = os.read(self.process.stdout.fileno(), 1 << 16)
            if not data:
                raise AssertionError("the worker closed its stdout")
            self.inbox += self.reader.feed(data)
        return self.inbox.pop(0)

    def receive(self, *, skip_heartbeats: bool = True, timeout: float = WAIT) -> Message:
        while True:
            message = self.codec.decode(self.frames(timeout))
            if not (skip_heartbeats and message.type == messages.WORKER_HEARTBEAT):
                return message

    def send(self, msg_type: str, body: Any, *, re: str | None = None,
             codec: Codec | None = None) -> str:
        msg_id = new_message_id()
        self.send_frames((codec or self.codec).encode(msg_type, body, re=re, msg_id=msg_id))
        return msg_id

    def send_frames(self, frames: list[Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(pack_bytes(frames))
        self.process.stdin.flush()

    def finish(self) -> tuple[int, str]:
        assert self.process is not None
        out, err = self.process.communicate(timeout=WAIT)
        self.inbox += self.reader.feed(out)
        return self.process.returncode, err.decode()

    def said_nothing(self) -> bool:
        return not self.inbox and not self.reader.pending()


@pytest.fixture(params=["zmq", "stdio"])
def peer(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Peer]:
    (tmp_path / "ptsmod.py").write_text(PTS_MODULE)
    context = zmq.Context()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    peer = (StdioPeer if request.param == "stdio" else Peer)(tmp_path, socket)
    socket.bind(peer.endpoint)
    try:
        yield peer
    finally:
        if peer.process is not None and peer.process.poll() is None:
            peer.process.kill()
            peer.process.communicate(timeout=WAIT)
        socket.close()
        context.term()


def test_hello_names_the_pid_entry_hooks_and_capabilities(peer: Peer) -> None:
    peer.spawn("--config", "ptsmod:configure")
    hello = peer.receive()
    assert hello.type == messages.WORKER_HELLO
    assert peer.process is not None
    assert hello.body["pid"] == peer.process.pid
    assert hello.body["entry"] == "ptsmod:act"
    assert hello.body["hooks"] == ["config"]
    assert set(hello.body["capabilities"]) == {"cancel", "progress", "log"}
    assert hello.body["python"] == sys.version


def test_a_task_is_answered_with_its_result(peer: Peer) -> None:
    peer.started()
    task = peer.task({"do": "echo", "value": {"x": [1, 2], "b": b"\x00\xff"}})
    reply = peer.receive()
    assert (reply.type, reply.re) == (messages.TASK_REP, task)
    assert reply.body == {"result": {"x": [1, 2], "b": b"\x00\xff"}}


def test_a_large_bytes_value_travels_as_a_blob_both_ways(peer: Peer) -> None:
    peer.started()
    blob = os.urandom(300 * 1024)
    task = peer.task({"do": "echo", "value": blob})
    reply = peer.receive()
    assert (reply.type, reply.re) == (messages.TASK_REP, task)
    assert reply.body == {"result": blob}


def test_a_worker_on_ipc_sends_blobs_unsigned_and_refuses_a_blob_cut_short(peer: Peer) -> None:
    """The worker's blob frames are outside its signature (their lengths are inside); one the
    daemon's side cut short is dropped by the worker, which goes on serving."""
    peer.started()
    blob = os.urandom(300 * 1024)
    frames = peer.codec.encode(messages.TASK_REQ, {"op": "run", "data": {"do": "echo",
                               "value": blob}, "timeout": 5, "job": ""})
    peer.send_frames([*frames[:4], frames[4][:-1]])
    task = peer.task({"do": "echo", "value": blob})
    deadline = time.monotonic() + WAIT
    while True:     # past the heartbeats
        reply = peer.frames(deadline - time.monotonic())
        message = peer.codec.decode(reply)
        if message.type != messages.WORKER_HEARTBEAT:
            break
    assert len(reply) == 5 and reply[1] == peer.codec.signer.sign(reply[:1] + reply[2:4])
    assert (message.type, message.re, message.body) == (messages.TASK_REP, task, {"result": blob})


def test_messages_sent_in_one_burst_are_all_handled(peer: Peer) -> None:
    peer.started()
    first = peer.task({"do": "echo", "value": 1})     # queued together: the worker reads
    second = peer.task({"do": "echo", "value": 2})    # one per wake-up and must see them all
    peer.send(messages.WORKER_STOP, {})
    replies = {}
    for _ in range(2):
        reply = peer.receive()
        replies[reply.re] = (reply.type, reply.body.get("result"), reply.body.get("code"))
    assert replies[first] == (messages.TASK_REP, 1, None)
    assert replies[second] in ((messages.TASK_REP, 2, None), (messages.ERROR, None, "busy"))
    assert peer.finish()[0] == 0


def test_a_hook_runs_its_entry_and_a_missing_hook_returns_none(peer: Peer) -> None:
    peer.spawn("--config", "ptsmod:configure")
    peer.receive()
    peer.task(None, op="config")
    assert peer.receive().body == {"result": "configured"}
    peer.task(None, op="clean")
    assert peer.receive().body == {"result": None}


def test_an_exception_becomes_an_error_without_traceback(peer: Peer) -> None:
    peer.started()
    task = peer.task({"do": "boom"})
    reply = peer.receive()
    assert (reply.type, reply.re) == (messages.ERROR, task)
    assert reply.body == {"code": "pts_error", "message": "ValueError: bad value 42",
                          "details": {}}
    peer.send(messages.WORKER_STOP, {})
    code, stderr = peer.finish()
    assert code == 0
    assert "Traceback" in stderr and "bad value 42" in stderr   # the traceback stays local


def test_an_unserialisable_result_is_an_error_and_the_worker_keeps_serving(peer: Peer) -> None:
    peer.started()
    task = peer.task({"do": "opaque"})
    reply = peer.receive()
    assert (reply.type, reply.re) == (messages.ERROR, task)
    assert reply.body["code"] == "pts_error"
    assert "cannot be encoded" in reply.body["message"]
    peer.task({"do": "echo", "value": 7})
    assert peer.receive().body == {"result": 7}


def test_a_short_tasks_progress_and_log_lines_ride_with_its_reply(peer: Peer) -> None:
    if peer.transport == "stdio":
        pytest.skip("the stdio runtime writes each line as it comes (the spec allows both)")
    peer.started()
    task = peer.task({"do": "chatty"})
    reply = peer.receive()
    assert (reply.type, reply.re) == (messages.TASK_REP, task)
    assert reply.body == {"result": "chatted", "events": [
        [messages.TASK_PROGRESS, {"percent": 50, "message": "half way"}],
        [messages.TASK_LOG, {"line": "a line from the PTS"}]]}
    peer.task({"do": "echo", "value": 7})
    assert peer.receive().body == {"result": 7}    # nothing reported: no events


def test_a_failed_tasks_lines_are_sent_before_its_error(peer: Peer) -> None:
    peer.started()
    task = peer.task({"do": "chatty_fail"})
    seen = [peer.receive() for _ in range(2)]
    assert [(m.type, m.re) for m in seen] == [(messages.TASK_LOG, task), (messages.ERROR, task)]
    assert seen[0].body == {"line": "about to fail"}
    assert seen[1].body["message"] == "ValueError: failed after a line"


def test_cancel_sets_ctx_cancelled_and_heartbeats_go_on_while_busy(peer: Peer) -> None:
    peer.started()
    task = peer.task({"do": "wait_cancel"})
    assert peer.receive().body["message"] == "started"
    beat = peer.receive(skip_heartbeats=False)
    assert (beat.type, beat.body) == (messages.WORKER_HEARTBEAT, {"busy": True})
    peer.send(messages.TASK_CANCEL, {}, re=task)
    reply = peer.receive()
    assert (reply.type, reply.re, reply.body) == (messages.TASK_REP, task, {"result": True})


def test_worker_stop_exits_with_code_zero(peer: Peer) -> None:
    peer.started()
    peer.send(messages.WORKER_STOP, {})
    assert peer.finish()[0] == 0


def test_sigterm_exits_cleanly_even_during_a_task(peer: Peer) -> None:
    peer.started()
    peer.task({"do": "wait_cancel"})
    assert peer.receive().body["message"] == "started"
    assert peer.process is not None
    peer.process.send_signal(signal.SIGTERM)
    assert peer.finish()[0] == 0


def test_sigterm_exits_at_once_even_when_the_task_ignores_cancel(peer: Peer) -> None:
    peer.started()
    peer.task({"do": "stubborn"})
    assert peer.receive().body["message"] == "started"
    assert peer.process is not None
    started = time.monotonic()
    peer.process.send_signal(signal.SIGTERM)
    assert peer.finish()[0] == 0
    assert time.monotonic() - started < WAIT / 2


def test_heartbeats_go_on_while_a_task_ignores_cancel(peer: Peer) -> None:
    peer.started()
    task = peer.task({"do": "stubborn"})
    assert peer.receive().body["message"] == "started"
    beats = [peer.receive(skip_heartbeats=False) for _ in range(3)]
    assert [(m.type, m.body) for m in beats] == [(messages.WORKER_HEARTBEAT, {"busy": True})] * 3
    peer.send(messages.TASK_CANCEL, {}, re=task)     # asked, not obeyed: still beating
    assert peer.receive(skip_heartbeats=False).type == messages.WORKER_HEARTBEAT


def test_log_lines_of_a_short_task_all_arrive_before_its_reply(peer: Peer) -> None:
    peer.started()
    task = peer.task({"do": "many_logs", "lines": 500})
    lines = []
    while (message := peer.receive()).type == messages.TASK_LOG:   # sent while it ran
        assert message.re == task
        lines.append(message.body["line"])
    assert (message.type, message.re, message.body["result"]) == (
        messages.TASK_REP, task, "logged")
    lines += [body["line"] for _kind, body in message.body.get("events", [])]   # the rest
    assert lines == [f"line {n}" for n in range(500)]


def test_tasks_in_a_row_are_each_answered_in_order(peer: Peer) -> None:
    peer.started()
    tasks = [peer.task({"do": "echo", "value": n}) for n in range(50)]
    replies = [peer.receive() for _ in tasks]
    assert [(m.re, m.body) for m in replies] == [(t, {"result": n}) for n, t in enumerate(tasks)]


def test_an_entry_that_cannot_be_imported_exits_3_before_hello(peer: Peer) -> None:
    peer.spawn(entry="no_such_module_xyz:run")
    code, stderr = peer.finish()
    assert code == 3
    assert "cannot import 'no_such_module_xyz'" in stderr
    assert "No module named 'no_such_module_xyz'" in stderr
    assert peer.said_nothing()                 # it never said hello


def test_a_failing_init_exits_4_before_hello(peer: Peer) -> None:
    peer.spawn("--init", "ptsmod:failing_init")
    code, stderr = peer.finish()
    assert code == 4
    assert "no licence" in stderr


def test_a_message_with_a_bad_signature_is_ignored(peer: Peer) -> None:
    peer.started()
    forged = peer.send(   # a task signed with another key
        messages.TASK_REQ, {"op": "run", "data": {"do": "echo", "value": "forged"},
                            "timeout": 5, "job": ""}, codec=Codec(b"another key"))
    genuine = peer.task({"do": "echo", "value": "genuine"})
    reply = peer.receive()
    assert (reply.re, reply.body) == (genuine, {"result": "genuine"})
    assert forged != genuine
    peer.send(messages.WORKER_STOP, {})
    code, stderr = peer.finish()
    assert code == 0
    assert "dropped a message: bad message signature" in stderr


def test_a_task_while_busy_is_refused_as_busy(peer: Peer) -> None:
    peer.started()
    first = peer.task({"do": "wait_cancel"})
    assert peer.receive().body["message"] == "started"
    second = peer.task({"do": "echo", "value": 1})
    reply = peer.receive()
    assert (reply.type, reply.re, reply.body["code"]) == (messages.ERROR, second, "busy")
    peer.send(messages.TASK_CANCEL, {}, re=first)
    assert peer.receive().re == first


def test_a_worker_whose_daemon_dies_exits_on_its_own(peer: Peer) -> None:
    parent = peer.spawn(wrapper=(sys.executable, "-c",
                                 "import subprocess, sys; subprocess.run(sys.argv[1:])"))
    worker = peer.receive().body["pid"]
    assert worker != parent.pid
    parent.kill()                       # like a daemon killed with SIGKILL
    parent.communicate(timeout=WAIT)
    try:
        exited = os.pidfd_open(worker)  # readable once the process has exited
    except ProcessLookupError:          # gone already
        return
    try:
        assert select.select([exited], [], [], WAIT)[0], "the orphaned worker did not exit"
    finally:
        os.close(exited)



def test_a_refused_hello_makes_the_worker_exit_6(peer: Peer) -> None:
    hello = peer.started()
    assert hello.body["protocols"] == [1, 2]
    peer.send(messages.ERROR, {"code": "version", "message": "this daemon speaks 3-4",
                               "details": {}}, re=hello.id)
    code, stderr = peer.finish()
    assert code == 6
    assert "refused this worker (version): this daemon speaks 3-4" in stderr


def test_after_the_welcome_tasks_are_served(peer: Peer) -> None:
    hello = peer.started()
    peer.send(messages.WORKER_WELCOME, {"protocol": 2}, re=hello.id)
    task = peer.task({"do": "echo", "value": "welcomed"})
    reply = peer.receive()
    assert (reply.re, reply.body) == (task, {"result": "welcomed"})


def test_a_print_of_the_pts_goes_to_stderr_not_into_the_stream(peer: Peer) -> None:
    if peer.transport != "stdio":
        pytest.skip("a ZeroMQ worker's stdout is a log stream like its stderr")
    peer.started()
    task = peer.task({"do": "print"})
    reply = peer.receive()
    assert (reply.re, reply.body) == (task, {"result": "printed"})
    peer.send(messages.WORKER_STOP, {})
    code, stderr = peer.finish()
    assert code == 0 and "printed by the PTS" in stderr


def test_a_stdio_worker_exits_0_when_its_stdin_ends(peer: Peer) -> None:
    if peer.transport != "stdio":
        pytest.skip("a stdio stream's end")
    peer.started()
    assert peer.finish()[0] == 0        # communicate() closes the worker's stdin first


def test_a_stdio_worker_exits_1_on_garbage_from_the_daemon(peer: Peer) -> None:
    if peer.transport != "stdio":
        pytest.skip("a stdio stream's framing")
    peer.started()
    assert peer.process is not None and peer.process.stdin is not None
    peer.process.stdin.write(b"not a record\n")
    peer.process.stdin.flush()
    code, stderr = peer.finish()
    assert code == 1 and "broken stream from the daemon" in stderr
