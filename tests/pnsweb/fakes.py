"""A fake daemon client for pnsweb tests: a programmable table of operation -> handler.

Implements what pnsweb needs of ``protocols.client.AsyncClient`` (``pnsweb.keys.DaemonClient``):
``call``, ``stream`` and ``close``. A handler gets the request body and returns the reply body,
or raises ``protocols.errors.RemoteError`` (or ``ClientTimeout``) as the real client would.
Every call is recorded, so tests can assert what pnsweb asked the daemon for.

    daemon = FakeDaemon()
    daemon.on("run", lambda body: {"job": "j1", "result": {...}})
    daemon.fail("pts.hook", "busy", "hello is busy")
    app = create_app(settings, client=daemon)
    ...
    assert daemon.calls[-1] == Call("run", {...}, None)

Async handlers are awaited, so a test can hold a call open (an ``asyncio.Event``) to exercise
concurrency. An operation with no handler answers ``unknown_op``, as a real daemon does.
Stream handlers return (or yield) the event bodies; the stream ends after the last one.

Also here for every pnsweb test module: ``web_settings()`` (with an admin ``ADMIN`` and an
ordinary ``USER``), ``basic(credentials)`` for an Authorization header, ``described()`` (a
``pts.describe`` reply made by pnsd's own spec parser) and ``demo_daemon()``, a FakeDaemon
already answering like pnsd with its demo PTS. The replies of ``demo_daemon()`` and of
``tests.pnsweb.fakes_v1.demo_daemon()`` are checked against a real daemon's, operation by
operation, by ``tests/integration/test_web_fakes_contract.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import encode_basic_auth

from pnsd.spec import Mode, parse_spec
from pnsweb.settings import User, WebSettings, hash_password
from protocols.errors import ClientClosed, ClientTimeout, ErrorCode, RemoteError

Handler = Callable[[Any], Any | Awaitable[Any]]
StreamHandler = Callable[[Any], Iterable[Any] | AsyncIterator[Any]]


@dataclass(frozen=True)
class Call:
    """One recorded request: the operation, its body and the timeout the caller gave."""

    op: str
    body: Any
    timeout: float | None = None


@dataclass
class FakeDaemon:
    """A stand-in for ``AsyncClient`` with a programmable table of op -> handler."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    streams: dict[str, StreamHandler] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    closed: bool = False
    is_down: bool = False

    # -- programming ---------------------------------------------------------------------------

    def on(self, op: str, handler: Handler) -> FakeDaemon:
        """Answer ``op`` with ``handler(body)`` (awaited when it is a coroutine)."""
        self.handlers[op] = handler
        return self

    def reply(self, op: str, body: Any) -> FakeDaemon:
        """Answer ``op`` with a fixed reply body."""
        return self.on(op, lambda _body: body)

    def fail(
        self, op: str, code: str, message: str = "", details: dict[str, Any] | None = None
    ) -> FakeDaemon:
        """Answer ``op`` with a protocol error, as the real client raises it."""

        def raise_error(_body: Any) -> Any:
            raise RemoteError(code, message or code, details or {})

        return self.on(op, raise_error)

    def time_out(self, op: str) -> FakeDaemon:
        """Let ``op`` time out on the client side (no reply within the call's timeout)."""

        def raise_timeout(_body: Any) -> Any:
            raise ClientTimeout(f"no reply to {op} within the timeout")

        return self.on(op, raise_timeout)

    def down(self) -> FakeDaemon:
        """Every call fails as when the daemon is not reachable (stopped or restarting)."""
        self.is_down = True
        return self

    def up(self) -> FakeDaemon:
        """Undo :meth:`down`: the programmed handlers answer again (the daemon is back)."""
        self.is_down = False
        return self

    def on_stream(self, op: str, handler: StreamHandler) -> FakeDaemon:
        """Answer a streaming ``op`` with the events ``handler(body)`` produces."""
        self.streams[op] = handler
        return self

    # -- inspection ----------------------------------------------------------------------------

    def calls_of(self, op: str) -> list[Call]:
        return [call for call in self.calls if call.op == op]

    @property
    def ops(self) -> list[str]:
        return [call.op for call in self.calls]

    # -- the DaemonClient surface --------------------------------------------------------------

    async def call(
        self, op: str, body: Any = None, *, timeout: float | None = None
    ) -> Any:
        self._check(op, body, timeout)
        handler = self.handlers.get(op)
        if handler is None:
            raise RemoteError(ErrorCode.UNKNOWN_OP, f"no handler for {op}")
        result = handler(body)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def stream(
        self, op: str, body: Any = None, *, timeout: float | None = None
    ) -> AsyncIterator[Any]:
        self._check(op, body, timeout)
        handler = self.streams.get(op)
        if handler is None:
            raise RemoteError(ErrorCode.UNKNOWN_OP, f"no stream handler for {op}")
        events = handler(body)
        if isinstance(events, AsyncIterator):
            async for event in events:
                yield event
        else:
            for event in events:
                yield event

    async def close(self) -> None:
        self.closed = True

    def _check(self, op: str, body: Any, timeout: float | None) -> None:
        if self.closed:
            raise ClientClosed("client is closed")
        self.calls.append(Call(op, body, timeout))
        if self.is_down:
            raise RemoteError(ErrorCode.UNAVAILABLE, "daemon at ipc://fake is not reachable")


# -- ready-made settings, credentials and a daemon that answers like the demo -------------------

ADMIN = ("alice", "wonder land:1")     # an administrator (a colon in the password on purpose)
USER = ("bob", "builder")              # an ordinary user


@functools.cache
def users() -> tuple[User, ...]:
    """The test users, hashed once per test session (scrypt is slow on purpose)."""
    return (User(ADMIN[0], hash_password(ADMIN[1]), admin=True),
            User(USER[0], hash_password(USER[1])))


def web_settings(**changes: Any) -> WebSettings:
    """Settings for an app under test: the test users, a fake endpoint, no key."""
    return dataclasses.replace(WebSettings(endpoint="ipc://fake", users=users()), **changes)


def basic(credentials: tuple[str, str]) -> dict[str, str]:
    """An Authorization header for ``(user, password)``."""
    return {"Authorization": encode_basic_auth(*credentials)}


HELLO_SPEC: dict[str, Any] = {
    "name": "hello", "mode": "process", "version": "1", "description": "hello",
    "init": ["initPTS"], "config": ["configPTS"], "run": ["runPTS"], "clean": ["cleanPTS"],
    "inputs": {"infile": {"title": "Name", "description": "the name to greet",
                          "schema": {"type": "string"}, "minOccurs": 0}},
    "outputs": {"outfile": {"title": "Greeting", "description": "hello NAME!",
                            "schema": {"type": "string", "contentMediaType": "text/plain"}}},
    "timeout": 10.0, "queue": 0, "env": {"SECRET_TOKEN": "s3cret"},
}
SPECTRUM = {
    "col1": {"data": [1, 4.4, 5400.0], "unit": "eV"},
    "col2": {"data": [0, 43.2, 2000.0], "unit": "cnt"},
}


def described(table: Mapping[str, Any], state: str = "ready", reason: str = "",
              **details: Any) -> dict[str, Any]:
    """A ``pts.describe`` reply as pnsd gives it for the PTS ``table`` (a ``[pts.NAME]`` table
    and its ``name``): the spec as pnsd's own parser publishes it, and the state of its first
    generation (``details``: what its host adds, e.g. a process host's ``last_run_dir``), its
    declared interface and whether synchronous results are kept."""
    parsed = parse_spec(table["name"], {k: v for k, v in table.items() if k != "name"})
    return {"spec": parsed.public(), "state": {
        "generation": 1, "version": parsed.version, "mode": parsed.mode.value, "running": 0,
        "queued": 0, "slots": parsed.slots, "queue": parsed.queue, "state": state,
        "reason": reason, **details},
        "interface": parsed.interface.described(process=parsed.mode is Mode.PROCESS),
        "sync_results_kept": True}


def outcome(command: str, stdout: str = "", returncode: int = 0, **more: Any) -> dict[str, Any]:
    """A process-mode result as the daemon returns it."""
    return {"command": [f"/home/pns/{command}"], "returncode": returncode, "stdout": stdout,
            "stderr": "", "outputs": {}, "truncated": False, **more}


def demo_daemon() -> FakeDaemon:
    """A fake daemon whose operations answer like pnsd serving its demo PTS."""
    spec = dict(HELLO_SPEC)
    daemon = FakeDaemon()
    daemon.on("ping", lambda body: {"version": "0.1.0", "protocol": 1, "time": 0.0})
    daemon.on("pts.script", lambda body: {"text": f"#!/bin/sh\n# {body['hook']}PTS\n",
                                          "path": f"/home/pns/{body['hook']}PTS"})
    daemon.on("pts.files", lambda body: {"files": {"infile": "stranger"}})
    daemon.on("pts.hook", lambda body: {"result": outcome(
        f"{body['hook']}PTS", "The initialization script at /home/pns\n")})
    daemon.on("demo.reset", lambda body: {"restored": ["initPTS", "configPTS", "runPTS",
                                                       "cleanPTS"]})

    def describe(body: Any) -> Any:
        if body["name"] != spec["name"]:
            raise RemoteError(ErrorCode.NOT_FOUND, f"no PTS named {body['name']!r}",
                              {"pts": body["name"]})
        return described(spec, running=0, last_run_dir=None)

    def update(body: Any) -> Any:
        spec.update(body["changes"])
        return {"spec": described(spec)["spec"]}

    daemon.on("pts.describe", describe)

    daemon.on("pts.update", update)
    daemon.on("run", _demo_run)
    return daemon


def _demo_run(body: Any) -> Any:
    pts, data = body["pts"], body["input"]
    if pts == "hello":
        line = f"hello {data.get('infile') or 'stranger'}! From pns Sat Nov 28 01:45:31 UTC 2026\n"
        return {"job": "j-hello", "result": outcome("runPTS", line, outputs={"outfile": line})}
    if pts == "testcalc":
        meta = next(iter(data["input"]["meta"].items()))
        dataset = next((k, v) for k, v in data["input"].items() if k != "meta")
        return {"job": "j-calc", "result": {
            "creator": data["creator"], "rootcause": data["rootcause"],
            "meta": dict([meta]), "datasets": {dataset[0]: dataset[1], "spectrum": SPECTRUM}}}
    if pts == "sleep-process":
        return {"job": "j-sleep", "result": outcome("sleepPTS", f"slept {data['seconds']}\n")}
    raise RemoteError(ErrorCode.NOT_FOUND, f"no PTS named {pts!r}", {"pts": pts})
