"""The worker host's dispatcher without processes: the line, answers, cancels, timeouts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from pnsd.errors import (
    BadRequest,
    Cancelled,
    DaemonError,
    RunTimeout,
    TooLarge,
    Unavailable,
    WorkerDied,
)
from pnsd.hosts.base import HostState
from pnsd.hosts.dispatcher import Dispatcher, Run
from pnsd.hosts.workerslot import WorkerSlot
from protocols import messages
from protocols.codec import Codec, Message
from protocols.context import RunContext
from tests.waiting import until

KEY = b"dispatcher-test-key"


class Outcomes:
    """Every answer, by run name, in the order they came."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, DaemonError | None]] = []

    def reply(self, name: str) -> Any:
        return lambda result, error: self.seen.append((name, result, error))

    def errors(self) -> dict[str, type[DaemonError] | None]:
        return {name: type(error) if error else None for name, _, error in self.seen}


class Node:
    """A dispatcher over two ready fake workers, recording what it sends and cancels."""

    def __init__(self, workers: int = 2, *, prefetch: int = 0) -> None:
        self.state = HostState("ready")
        self.workers = [WorkerSlot(i, ready=True) for i in range(workers)]
        self.sent: list[tuple[WorkerSlot, Message]] = []
        self.ladders: list[tuple[Run, str]] = []
        self.codec = Codec(KEY, guard_replay=False)
        self.dispatcher = Dispatcher("t", workers=self.workers, state=self.state,
                                     codec_for=lambda worker: self.codec, send=self._send,
                                     cancel=self._cancel, prefetch=prefetch)
        self.outcomes = Outcomes()

    def _send(self, worker: WorkerSlot, frames: list[bytes]) -> None:
        self.sent.append((worker, self.codec.decode(frames)))

    def _cancel(self, run: Run, settled: asyncio.Future[None], reason: str) -> None:
        self.ladders.append((run, reason))

    def start(self, name: str, *, timeout: float = 30.0, data: Any = None) -> Run:
        return self.dispatcher.start("run", data if data is not None else name, timeout=timeout,
                                     ctx=RunContext(name), reply=self.outcomes.reply(name))

    def reply(self, run: Run, result: Any) -> None:
        assert run.worker is not None
        message = Message(messages.TASK_REP, {"result": result}, "m", run.id, 0.0)
        self.dispatcher.on_outcome(run.worker, message)


async def test_runs_go_to_idle_workers_then_wait_in_line_in_order() -> None:
    node = Node()
    first, second, third, fourth = (node.start(n) for n in ("a", "b", "c", "d"))
    assert [m.body["data"] for _, m in node.sent] == ["a", "b"]
    assert {first.worker, second.worker} == set(node.workers)
    assert third.worker is None and node.dispatcher.load() == (2, 2)

    node.reply(first, "A")        # answered at once; its worker takes the first in line
    assert node.outcomes.seen == [("a", "A", None)]
    assert third.worker is first.worker and fourth.worker is None
    node.reply(second, "B")
    node.reply(third, "C")
    node.reply(fourth, "D")
    assert [(n, r) for n, r, _ in node.outcomes.seen] == [
        ("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")]
    assert node.dispatcher.load() == (0, 0)


async def test_a_cancelled_run_is_answered_at_once_and_leaves_the_line() -> None:
    node = Node(workers=1)
    running, waiting, after = node.start("a"), node.start("b"), node.start("c")
    node.dispatcher.cancel(waiting, "no longer wanted")
    assert node.outcomes.errors() == {"b": Cancelled}
    assert node.ladders == []                     # nothing ran: nothing to stop
    node.reply(running, "A")
    assert after.worker is running.worker         # the cancelled one was skipped
    node.dispatcher.cancel(after, "stop it")
    assert node.ladders == [(after, "stop it")]   # on a worker: the cancel ladder starts
    assert node.outcomes.errors() == {"a": None, "b": Cancelled, "c": Cancelled}
    node.reply(after, "late")                     # the worker's late answer is not passed on
    assert len(node.outcomes.seen) == 3


async def test_timeouts_in_line_and_on_a_worker_fail_the_run_alone() -> None:
    node = Node(workers=1)
    slow = node.start("slow", timeout=0.05)
    waiting = node.start("waiting", timeout=0.05)
    await until(lambda: len(node.outcomes.seen) == 2, timeout=5)
    assert node.outcomes.errors() == {"slow": RunTimeout, "waiting": RunTimeout}
    assert "no worker free" in str(node.outcomes.seen[1][2])
    assert node.ladders == [(slow, "run exceeded 0.05 s")]
    assert waiting.worker is None


async def test_a_lost_worker_fails_its_run_and_a_host_that_stops_fails_the_line() -> None:
    node = Node(workers=1)
    running, waiting = node.start("a"), node.start("b")
    assert running.worker is not None
    node.dispatcher.worker_lost(running.worker, "killed by signal 9", pid=1234)
    assert node.outcomes.errors() == {"a": WorkerDied}
    assert waiting.worker is running.worker       # the next in line took the worker
    waiting_too = node.start("c")
    node.state.state = "stopping"
    node.dispatcher.close("PTS t stopped during the run")
    assert node.outcomes.errors() == {"a": WorkerDied, "b": Unavailable, "c": Unavailable}
    assert waiting_too.worker is None
    with pytest.raises(Unavailable, match="stopping"):
        node.start("d")


async def test_an_input_that_cannot_be_encoded_is_refused_at_once() -> None:
    node = Node()
    with pytest.raises(BadRequest, match="cannot be encoded"):
        node.start("x", data=object())
    assert node.dispatcher.load() == (0, 0)


async def test_a_task_over_the_workers_limit_is_refused_before_it_is_sent() -> None:
    node = Node()
    node.codec.max_bytes = 4096
    with pytest.raises(TooLarge, match="too large for the worker"):
        node.start("x", data=b"y" * 8192)
    assert node.sent == [] and node.dispatcher.load() == (0, 0)
    node.start("small")
    assert len(node.sent) == 1


async def test_call_awaits_the_answer_and_a_cancelled_caller_cancels_the_run() -> None:
    node = Node(workers=1)
    call = asyncio.ensure_future(
        node.dispatcher.call("run", 1, timeout=30, ctx=RunContext("j")))
    await until(lambda: bool(node.sent))
    worker, task = node.sent[-1]
    node.dispatcher.on_outcome(worker, Message(messages.TASK_REP, {"result": "one"}, "m",
                                               task.id, 0.0))
    assert await call == "one"

    call = asyncio.ensure_future(
        node.dispatcher.call("run", 2, timeout=30, ctx=RunContext("j")))
    await until(lambda: len(node.sent) == 2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert [reason for _, reason in node.ladders] == ["run cancelled"]


async def test_lines_that_ride_with_a_reply_reach_the_run_before_its_answer() -> None:
    node = Node()
    order: list[str] = []
    ctx = RunContext("j", lambda percent, text: order.append(f"{percent} {text}"), order.append)
    run = node.dispatcher.start("run", 1, timeout=30, ctx=ctx,
                                reply=lambda result, error: order.append(f"answer {result}"))
    assert run.worker is not None
    events = [[messages.TASK_PROGRESS, {"percent": 50, "message": "half"}],
              [messages.TASK_LOG, {"line": "a line"}], ["bogus"], [messages.TASK_LOG, "x"]]
    node.dispatcher.on_outcome(run.worker, Message(
        messages.TASK_REP, {"result": "r", "events": events}, "m", run.id, 0.0))
    assert order == ["50 half", "a line", "answer r"]


@pytest.mark.parametrize("percent", [float("nan"), float("inf"), float("-inf"), "50", True])
async def test_a_progress_that_is_not_a_finite_number_is_ignored_and_the_result_delivered(
        percent: Any) -> None:
    node = Node()
    order: list[str] = []
    ctx = RunContext("j", lambda value, text: order.append(f"{value} {text}"), order.append)
    run = node.dispatcher.start("run", 1, timeout=30, ctx=ctx,
                                reply=lambda result, error: order.append(f"answer {result}"))
    assert run.worker is not None
    events = [[messages.TASK_PROGRESS, {"percent": percent, "message": "bad"}],
              [messages.TASK_PROGRESS, {"percent": 60, "message": "good"}]]
    with capture_logs() as logs:
        node.dispatcher.on_event(run.worker, Message(
            messages.TASK_PROGRESS, {"percent": percent, "message": "alone"}, "p", run.id, 0.0))
        node.dispatcher.on_outcome(run.worker, Message(
            messages.TASK_REP, {"result": "r", "events": events}, "m", run.id, 0.0))
    assert order == ["60 good", "answer r"]
    ignored = [entry for entry in logs if entry["event"] == "worker_event_ignored"]
    assert len(ignored) == 1 and "percent" in ignored[0]["reason"]   # once per run


def _sent_to(node: Node) -> dict[str, int]:
    return {m.body["data"]: worker.index for worker, m in node.sent}


async def test_at_prefetch_zero_a_long_task_does_not_hold_back_a_short_one() -> None:
    node = Node()
    long_run, short_a, short_b = (node.start(n) for n in ("long", "a", "b"))
    assert _sent_to(node) == {"long": long_run.worker.index, "a": short_a.worker.index}
    assert short_b.worker is None           # waits in the host's line, bound to no worker
    node.reply(short_a, "A")                # the first worker to free up takes it
    assert short_b.worker is short_a.worker is not long_run.worker
    node.reply(short_b, "B")
    assert node.outcomes.errors() == {"a": None, "b": None}
    assert node.dispatcher.load() == (1, 0)


async def test_prefetch_n_hands_a_worker_n_tasks_beyond_its_current_one() -> None:
    node = Node(workers=2, prefetch=2)
    runs = [node.start(str(i)) for i in range(7)]
    assert len(node.sent) == 6                         # 2 workers x (1 + 2)
    assert sorted(_sent_to(node).values()) == [0, 0, 0, 1, 1, 1]
    assert runs[6].worker is None and node.dispatcher.load() == (2, 5)
    node.reply(runs[0], "0")                           # a held slot frees: the line moves
    assert runs[6].worker is runs[0].worker and len(node.sent) == 7
    assert node.outcomes.errors() == {"0": None}


async def test_a_prefetched_task_the_worker_refuses_as_busy_goes_back_to_the_line() -> None:
    node = Node(workers=1, prefetch=1)
    first, second = node.start("first"), node.start("second")
    assert second.worker is node.workers[0]
    refusal = Message(messages.ERROR, {"code": "busy", "message": "no queue", "details": {}},
                      "m", second.id, 0.0)
    node.dispatcher.on_outcome(node.workers[0], refusal)
    assert node.outcomes.errors() == {}                 # not failed: back in the line
    assert second.worker is None and len(node.sent) == 2   # that worker now takes one at a time
    node.reply(first, "1")
    assert second.worker is node.workers[0] and len(node.sent) == 3
    node.reply(second, "2")
    assert node.outcomes.errors() == {"first": None, "second": None}


async def test_a_lost_worker_fails_its_prefetched_tasks_too() -> None:
    node = Node(workers=1, prefetch=1)
    node.start("a"), node.start("b")
    node.dispatcher.worker_lost(node.workers[0], "exit code 1", pid=1)
    assert node.outcomes.errors() == {"a": WorkerDied, "b": WorkerDied}
