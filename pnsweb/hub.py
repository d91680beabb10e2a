"""The hub the pnsweb parent runs for its children: shared state and summed metrics.

Owns :class:`Hub`, served on a unix socket (``asyncio.start_unix_server(hub.serve, …)``) by
:mod:`pnsweb.prefork`. Each child joins (and gets the settings, the sessions' MAC key and the
hub's copy of the shared state), says when it serves, tells events (applied to the hub's copy,
then relayed to every other child; answered once all have acked, or after
:data:`ACK_TIMEOUT`), and asks for the port's metrics (the hub asks every child for its
counters and answers their sum, with the last counters of children that have died). The wire
and the child's end are :mod:`pnsweb.sharing`. Must not call the daemon or start processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Any

import structlog

from pnsweb.console.sessions import Sessions
from pnsweb.metrics import Metrics
from pnsweb.replica import Replica
from pnsweb.settings import WebSettings
from pnsweb.sharing import LinkClosed, Message, read_frame, settings_to_wire, write_frame
from pnsweb.throttle import LoginThrottle

ACK_TIMEOUT = 3.0         # seconds the hub waits for the children to apply an event
GATHER_TIMEOUT = 2.0      # seconds it waits for their counters
log = structlog.get_logger(__name__)


@dataclass(eq=False)
class Child:
    """One joined child: its pid, its stream, the hub's requests awaiting its answer."""

    pid: int
    writer: asyncio.StreamWriter
    waiting: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    last_counters: list[Any] = field(default_factory=list)


class Hub:
    """The children's meeting point (one per pnsweb parent)."""

    def __init__(self, settings: WebSettings, *, session_key: bytes) -> None:
        self._settings = settings
        self._session_key = session_key
        self._replica = Replica(LoginThrottle(), Sessions(key=session_key))
        self._children: dict[int, Child] = {}
        self._ids = itertools.count(1)
        self._retired = Metrics()            # counters of the children that have died
        self._answering: set[asyncio.Task[Any]] = set()   # relays and gatherings under way
        self.ready: asyncio.Queue[int] = asyncio.Queue()   # pids of children now serving

    @property
    def children(self) -> int:
        return len(self._children)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One child's connection, from its join until it goes away."""
        child: Child | None = None
        try:
            while True:
                message = await read_frame(reader)
                if child is None:
                    child = self._join(message, writer)
                else:
                    self._received(child, message)
        except LinkClosed:
            pass
        finally:
            if child is not None:
                self._leave(child)
            writer.close()

    def _join(self, message: Message, writer: asyncio.StreamWriter) -> Child:
        if message.get("t") != "join" or not isinstance(message.get("body"), dict):
            raise LinkClosed("a child's first frame must be its join")
        child = Child(int(message["body"]["pid"]), writer)
        self._children[child.pid] = child        # from now on it gets every event
        write_frame(writer, {"re": message["id"], "body": {
            "settings": settings_to_wire(self._settings),
            "session_key": self._session_key.hex(), "shared": self._replica.export()}})
        return child

    def _leave(self, child: Child) -> None:
        if self._children.get(child.pid) is child:
            del self._children[child.pid]
            self._retired.merge(child.last_counters)
        for future in child.waiting.values():
            if not future.done():
                future.set_exception(LinkClosed(f"child {child.pid} left"))

    def _received(self, child: Child, message: Message) -> None:
        if "re" in message:
            future = child.waiting.pop(message["re"], None)
            if future is not None and not future.done():
                future.set_result(message.get("body"))
            return
        kind = message.get("t")
        if kind == "ready":
            self.ready.put_nowait(child.pid)
            write_frame(child.writer, {"re": message["id"], "body": None})
        elif kind == "tell":
            self._replica.apply(message.get("body") or {})
            self._answer_later(child, message["id"], self._relay(child, message.get("body")))
        elif kind == "gather":
            self._answer_later(child, message["id"], self._gather())
        else:
            log.warning("hub_message_ignored", pid=child.pid, kind=kind)

    def _answer_later(self, child: Child, msg_id: Any, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._answering.add(task)

        def answer(done: asyncio.Task[Any]) -> None:
            self._answering.discard(done)
            if done.cancelled() or child.writer.is_closing():
                return
            error = done.exception()
            body = {"error": repr(error)} if error is not None else done.result()
            write_frame(child.writer, {"re": msg_id, "body": body})

        task.add_done_callback(answer)

    async def _ask(self, child: Child, kind: str, body: Any, timeout: float) -> Any:
        msg_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        child.waiting[msg_id] = future
        try:
            write_frame(child.writer, {"t": kind, "id": msg_id, "body": body})
            async with asyncio.timeout(timeout):
                return await future
        finally:
            child.waiting.pop(msg_id, None)

    async def _relay(self, origin: Child, event: Any) -> None:
        """Have every child but ``origin`` apply ``event``; a child that does not ack in time
        is logged (it is dying or stuck: the supervisor deals with that)."""
        others = [c for c in self._children.values() if c is not origin]
        results = await asyncio.gather(
            *(self._ask(c, "apply", event, ACK_TIMEOUT) for c in others), return_exceptions=True)
        for child, result in zip(others, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("shared_event_not_acked", pid=child.pid, error=repr(result))

    async def _gather(self) -> dict[str, Any]:
        """Every child's request counters added up, with those of children that died."""
        children = list(self._children.values())
        results = await asyncio.gather(
            *(self._ask(c, "snapshot", None, GATHER_TIMEOUT) for c in children),
            return_exceptions=True)
        total = Metrics()
        total.merge(self._retired.snapshot())
        answered = 0
        for child, result in zip(children, results, strict=True):
            if not isinstance(result, BaseException):
                child.last_counters, answered = result, answered + 1
            total.merge(child.last_counters)     # stuck now: its last counters stand in
        return {"rows": total.snapshot(), "processes": answered}

    async def close(self) -> None:
        for task in list(self._answering):
            task.cancel()
        await asyncio.gather(*self._answering, return_exceptions=True)
        for child in list(self._children.values()):
            child.writer.close()
            with contextlib.suppress(ConnectionError):
                await child.writer.wait_closed()
