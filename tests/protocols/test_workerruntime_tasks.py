"""protocols.workerruntime's tasks, in-process: the context a task gets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from protocols import messages
from protocols.codec import Codec, Message
from protocols.keeper import Task
from protocols.workerruntime import Call, WorkerRuntime

MODULE = '''
def plain(data):
    return data

def chatty(data, ctx):
    ctx.progress(50, "half")
    return data
'''


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkerRuntime]:
    (tmp_path / "tasksmod.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    context = zmq.Context()
    socket = context.socket(zmq.DEALER)
    read_fd, write_fd = os.pipe()
    try:
        yield WorkerRuntime(socket, Codec(b"k"), {"run": Call("tasksmod:plain"),
                                                  "init": Call("tasksmod:chatty")},
                            signal_fd=read_fd, heartbeat=1.0)
    finally:
        socket.close(linger=0)
        context.term()
        os.close(read_fd)
        os.close(write_fd)


def _started(runtime: WorkerRuntime, op: str) -> Task:
    started: list[Task] = []
    runtime.run_task = started.append    # type: ignore[method-assign,assignment]
    runtime.start_task(Message(messages.TASK_REQ, {"op": op, "data": 1, "job": "j1"}, "t1",
                               None, 0.0))
    [task] = started
    return task


def test_a_callable_without_ctx_gets_a_context_with_no_event_sinks(
        runtime: WorkerRuntime) -> None:
    ctx = _started(runtime, "run").ctx
    assert ctx.job_id == "j1" and ctx._on_progress is None and ctx._on_log is None
    ctx.progress(10, "nobody listens")    # harmless all the same
    assert runtime.outbox.take() == []


def test_a_callable_with_ctx_reports_through_its_sinks(runtime: WorkerRuntime) -> None:
    task = _started(runtime, "init")
    assert runtime.execute(task) == (messages.TASK_REP, {"result": 1})
    assert runtime.outbox.take() == [(messages.TASK_PROGRESS,
                                      {"percent": 50, "message": "half"}, "t1")]
