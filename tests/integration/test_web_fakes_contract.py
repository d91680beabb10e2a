"""The web tests' fake daemons against the real one: the same requests, replies of one shape.

The pnsweb unit tests drive the app over fakes (``tests.pnsweb.fakes``, ``tests.pnsweb.fakes_v1``)
that answer daemon operations. Here every operation those fakes implement is sent, with the
bodies pnsweb sends, to a fake and to a real daemon's operation handlers (``Handlers``, one
method per protocol operation, of an in-process daemon serving the demo PTS under ``tmp_path``),
and the two replies must agree in shape: the same keys, values of the same JSON kind, the same
error codes and error detail keys. What the two rightly differ in (ids, times, text, a PTS's
own data) is not compared; see :func:`drift`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from protocols.errors import RemoteError
from tests.integration.conftest import Running, running_daemon, settings_for
from tests.pnsweb import fakes, fakes_v1
from tests.waiting import until

pytestmark = pytest.mark.slow

OWNER = fakes.USER[0]           # the user pnsweb calls for (the fakes' jobs are this user's)
OTHER = "mallory"               # another user: another's job is not found
MISSING_JOB = "0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class Answer:
    """A reply body, or the error code and detail keys a call raised."""

    reply: Any = None
    code: str | None = None
    details: frozenset[str] = frozenset()


Ask = Callable[[str, Any], Awaitable[Answer]]


async def settled(value: Any) -> Any:
    """What a handler's return comes to: a value, after awaiting whatever stands for it (an
    awaitable, or a value handed to a callback registered with ``then``)."""
    while True:
        if inspect.isawaitable(value):
            value = await value
            continue
        then = getattr(value, "then", None)
        if not callable(then):
            return value
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def deliver(result: Any, error: BaseException | None,
                    future: asyncio.Future[Any] = future) -> None:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

        then(deliver)
        value = await future


def real_ask(handlers: Any) -> Ask:
    """Ask the daemon's handler of an operation (``job.list`` -> ``handlers.job_list``)."""

    async def ask(op: str, body: Any) -> Answer:
        method = getattr(handlers, op.replace(".", "_"))
        try:
            return Answer(await settled(method(body)))
        except Exception as exc:    # any coded error (pnsd's tree) is an answer to compare
            code = getattr(exc, "code", None)
            if code is None:
                raise
            return Answer(code=str(code), details=frozenset(getattr(exc, "details", {}) or {}))

    return ask


def fake_ask(daemon: fakes.FakeDaemon) -> Ask:
    async def ask(op: str, body: Any) -> Answer:
        assert op in daemon.handlers, f"the fake does not answer {op}"
        try:
            return Answer(await daemon.call(op, body))
        except RemoteError as exc:
            return Answer(code=exc.code, details=frozenset(exc.details))

    return ask


# -- what is compared ---------------------------------------------------------------------------

# Maps whose keys are names (PTS, files, outputs) or a PTS's own data: their keys are not
# compared, their values (for the maps of names) are compared with one another's.
NAMED = frozenset({"pts", "files", "outputs"})
DATA = frozenset({"input", "env", "data", "meta", "datasets"})


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, list | tuple):
        return "array"
    return "object" if isinstance(value, Mapping) else type(value).__name__


def drift(fake: Any, real: Any, path: str = "reply") -> list[str]:
    """Where ``fake`` differs in shape from ``real``: an object's keys, each value's JSON kind
    (null fits any kind: optional members), an array's items (the first of each)."""
    name = path.rsplit(".", 1)[-1]
    if fake is None or real is None or name in DATA:
        return []
    if kind(fake) != kind(real):
        return [f"{path}: the fake has {kind(fake)} {fake!r:.60}, the daemon {kind(real)} "
                f"{real!r:.60}"]
    if kind(real) == "array":
        return drift(fake[0], real[0], path + "[0]") if fake and real else []
    if kind(real) != "object":
        return []
    if name in NAMED:
        pairs = [(f, r) for f in list(fake.values())[:1] for r in list(real.values())[:1]]
        return [line for f, r in pairs for line in drift(f, r, path + ".*")]
    found = []
    if set(fake) != set(real):
        found.append(f"{path}: the fake lacks {sorted(set(real) - set(fake))}, has more "
                     f"{sorted(set(fake) - set(real))}")
    for key in sorted(set(fake) & set(real)):
        found += drift(fake[key], real[key], f"{path}.{key}")
    return found


def compare(label: str, fake: Answer, real: Answer) -> list[str]:
    if (fake.code, real.code) != (None, None):
        if (fake.code, fake.details) == (real.code, real.details):
            return []
        return [f"{label}: the fake raised {fake.code} {sorted(fake.details)}, the daemon "
                f"{real.code} {sorted(real.details)} {real.reply!r:.80}"]
    return [f"{label}: {line}" for line in drift(fake.reply, real.reply)]


# -- the requests -------------------------------------------------------------------------------

async def v06_requests(ask: Ask) -> dict[str, Answer]:
    """What the /v0.6 views send (the reference's one lock on the default PTS, hello)."""
    lock = {"lock": "hello"}
    return {
        "ping": await ask("ping", {}),
        "pts.script init": await ask("pts.script", {"name": "hello", "hook": "init"}),
        "pts.script run": await ask("pts.script", {"name": "hello", "hook": "run"}),
        "pts.files": await ask("pts.files", {"name": "hello", "which": "input"}),
        "pts.hook": await ask("pts.hook", {"name": "hello", "hook": "init", **lock}),
        "demo.reset": await ask("demo.reset", {**lock}),
        "pts.describe": await ask("pts.describe", {"name": "hello"}),
        "pts.describe missing": await ask("pts.describe", {"name": "no-such-pts"}),
        "pts.update": await ask("pts.update", {"name": "hello", "changes": {"timeout": 9.0},
                                               "who": "alice", **lock}),
        "run hello": await ask("run", {"pts": "hello", "input": {"infile": "Ann"}, **lock}),
        "run testcalc": await ask("run", {"pts": "testcalc", "input": {
            "creator": "me", "rootcause": "test",
            "input": {"meta": {"a": 1}, "col": [1, 2]}}}),
        "run sleep-process": await ask("run", {"pts": "sleep-process",
                                               "input": {"seconds": "0"}, **lock}),
        "run missing": await ask("run", {"pts": "no-such-pts", "input": {}}),
    }


async def v1_requests(ask: Ask, finished: Callable[[str], Awaitable[None]]) -> dict[str, Answer]:
    """What the /v1 and operations views send, with jobs made along the way."""
    mine = {"owner": OWNER}
    answers = {
        "ping": await ask("ping", {}),
        "status": await ask("status", {}),
        "pts.list": await ask("pts.list", {}),
        "pts.describe": await ask("pts.describe", {"name": "echo"}),
        "pts.describe missing": await ask("pts.describe", {"name": "no-such-pts"}),
        "run": await ask("run", {"pts": "echo", "input": {"x": [1, "a"]}, **mine}),
        "run missing": await ask("run", {"pts": "no-such-pts", "input": 1, **mine}),
        "submit": await ask("submit", {"pts": "echo", "input": 1, "idempotency_key": "k",
                                       **mine}),
        "submit again": await ask("submit", {"pts": "echo", "input": 1, "idempotency_key": "k",
                                             **mine}),
        "submit missing": await ask("submit", {"pts": "no-such-pts", "input": 1, **mine}),
        "submit long": await ask("submit", {"pts": "sleep", "input": {"seconds": 600}, **mine}),
    }
    ran = answers["run"].reply["job"]
    waiting = answers["submit long"].reply["job"]["id"]
    await finished(answers["submit"].reply["job"]["id"])
    for label, body in (("", {"job": ran, **mine}), (" operator", {"job": ran}),
                        (" other owner", {"job": ran, "owner": OTHER}),
                        (" missing", {"job": MISSING_JOB, **mine})):
        answers["job.status" + label] = await ask("job.status", body)
        answers["job.result" + label] = await ask("job.result", body)
        answers["job.result_chunk" + label] = await ask("job.result_chunk", {**body, "offset": 0})
    answers["job.result not ready"] = await ask("job.result", {"job": waiting, **mine})
    answers["job.list"] = await ask("job.list", {"limit": 10, "offset": 0, **mine})
    answers["job.list by status"] = await ask("job.list", {"status": "successful", "limit": 1})
    answers["job.list since"] = await ask("job.list", {"since": 0, "until": 4e9, **mine})
    answers["job.list none since"] = await ask("job.list", {"since": 4e9, **mine})
    answers["job.list bad since"] = await ask("job.list", {"since": -1, **mine})
    answers["job.list bad until"] = await ask("job.list", {"until": "today", **mine})
    answers["job.cancel"] = await ask("job.cancel", {"job": waiting, **mine})
    answers["job.cancel missing"] = await ask("job.cancel", {"job": MISSING_JOB, **mine})
    answers["job.delete"] = await ask("job.delete", {"job": ran, **mine})
    answers["job.delete again"] = await ask("job.delete", {"job": ran, **mine})
    return answers


# -- the test -----------------------------------------------------------------------------------

@pytest.fixture
async def real(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_daemon(settings_for(tmp_path / "home")) as node:
        yield node


def implemented(daemon: fakes.FakeDaemon) -> set[str]:
    return set(daemon.handlers)


async def test_the_v06_fake_answers_in_the_shape_of_the_real_daemon(real: Running) -> None:
    fake = fakes.demo_daemon()
    fake_answers = await v06_requests(fake_ask(fake))
    real_answers = await v06_requests(real_ask(real.daemon.handlers))
    assert {label.split()[0] for label in fake_answers} == implemented(fake)
    found = [line for label in fake_answers
             for line in compare(label, fake_answers[label], real_answers[label])]
    assert not found, "\n".join(found)


async def test_the_v1_fake_answers_in_the_shape_of_the_real_daemon(real: Running) -> None:
    fake, _book = fakes_v1.demo_daemon()
    handlers = real.daemon.handlers

    async def nothing(job: str) -> None:
        return None

    async def finished(job: str) -> None:
        async def done() -> bool:
            reply = await handlers.job_status({"job": job})
            return bool(reply["job"]["status"] == "successful")
        await until(done, timeout=20)

    fake_answers = await v1_requests(fake_ask(fake), nothing)
    real_answers = await v1_requests(real_ask(handlers), finished)
    assert {label.split()[0] for label in fake_answers} == implemented(fake)
    found = [line for label in fake_answers
             for line in compare(label, fake_answers[label], real_answers[label])]
    assert not found, "\n".join(found)


def test_drift_names_missing_keys_wrong_kinds_and_other_error_codes() -> None:
    real = {"job": {"id": "a", "progress": 5, "tags": ["x"]}, "pts": {"echo": {"state": "ready"}}}
    assert drift({"job": {"id": "b", "progress": 7.5, "tags": []},
                  "pts": {"other": {"state": "busy"}}}, real) == []
    found = drift({"job": {"id": 1, "tags": [2]}, "pts": {"p": {}}}, real)
    assert found == ["reply.job: the fake lacks ['progress'], has more []",
                     "reply.job.id: the fake has number 1, the daemon string 'a'",
                     "reply.job.tags[0]: the fake has number 2, the daemon string 'x'",
                     "reply.pts.*: the fake lacks ['state'], has more []"]
    assert compare("op", Answer(code="not_found"), Answer(code="not_found",
                                                         details=frozenset({"job"}))) != []
