"""One handler per protocol operation: check the request body, call the daemon, shape the reply.

Owns the translation between message bodies (SPEC.md, "Operations") and the scheduler,
registry and store. The tables at the bottom are plain data; a test checks that every
operation in :data:`protocols.messages.OPERATIONS` has exactly one handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pnsd.demo.install import install_scripts
from pnsd.deploy import Deployer
from pnsd.errors import BadRequest, NotFound, RunTimeout, TooLarge, Unavailable
from pnsd.hosts.mailbox import read_dir_files
from pnsd.jobs.events import summary
from pnsd.jobs.livejob import unpack
from pnsd.jobs.model import Job, Status
from pnsd.jobs.scheduler import Scheduler
from pnsd.jobs.uploads import Uploads
from pnsd.refusals import Refusals
from pnsd.registry import Registry
from pnsd.rolling import SPAN, STEP
from pnsd.server import Handler, StreamHandler
from pnsd.spec import HOOKS, Mode
from protocols.codec import DEFAULT_MAX_BYTES
from protocols.version import PROTOCOL_VERSION, __version__

WATCH_IDLE = 30.0     # a watch stream with no event for this long ends with a timeout error
MAX_LIST = 1000
MAX_SCRIPT = 16 * 2**20       # bytes of a script or mailbox file shown over the protocol
UPDATABLE = frozenset({"timeout"})
MAX_WHO = 200         # characters of an audit entry's "who"
ENVELOPE = 64 * 1024  # bytes of a reply besides the result: the rest of a message's room
MAX_OWNER = 200       # characters of a job's owner (a web user name)
MAX_KEY = 255         # characters of an idempotency key


@dataclass
class Handlers:
    """The operations of one daemon; built by the daemon with its parts."""

    registry: Registry
    scheduler: Scheduler
    home: Path
    started: float = field(default_factory=time.time)
    failures: dict[str, str] = field(default_factory=dict)   # PTS that failed to start
    deployer: Deployer | None = None                          # hot swap; None: not offered
    reloader: Callable[[], Awaitable[dict[str, str]]] | None = None
    refusals: Refusals | None = None     # the front door's, for the status reply
    max_message_bytes: int = DEFAULT_MAX_BYTES     # the replies' limit (the server's codec)
    uploads: Uploads | None = None       # inputs sent in parts (``upload``); None: not offered

    @property
    def result_room(self) -> int:
        """The largest result (packed) one reply carries; larger ones go in chunks."""
        return max(1, self.max_message_bytes - ENVELOPE)

    async def ping(self, body: Any) -> Any:
        return {"version": __version__, "protocol": PROTOCOL_VERSION, "time": time.time()}

    async def status(self, body: Any) -> Any:
        return {
            "version": __version__, "protocol": PROTOCOL_VERSION,
            "uptime": round(time.time() - self.started, 3),
            "accepting": self.scheduler.accepting,
            "pts": {g.spec.name: g.public() for g in self.registry.generations()}
            | {name: {"state": "unavailable", "reason": why}
               for name, why in self.failures.items()},
            "store": self.scheduler.store.stats(),
            "retiring": [{"name": g.spec.name, **g.public()} for g in self.registry.retiring()],
            "refusals": self.refusals.figures() if self.refusals else {},
        }

    async def stats(self, body: Any) -> Any:
        span = _int(body, "span", SPAN, STEP, SPAN)
        return self.scheduler.finisher.rolling.figures(self.scheduler.clock(), span=span)

    async def pts_list(self, body: Any) -> Any:
        return {"pts": [
            {"name": g.spec.name, "mode": g.spec.mode.value, "version": g.spec.version,
             "title": g.spec.interface.title, "description": g.spec.description,
             "keywords": list(g.spec.interface.keywords), "state": g.host.state().state}
            for g in sorted(self.registry.generations(), key=lambda g: g.spec.name)
        ]}

    async def pts_describe(self, body: Any) -> Any:
        generation = self.registry.get(_text(body, "name"))
        spec = generation.spec
        return {"spec": spec.public(), "state": generation.public(),
                "interface": spec.interface.described(process=spec.mode is Mode.PROCESS),
                "sync_results_kept": self.scheduler.record_sync}

    async def pts_hook(self, body: Any) -> Any:
        generation = self.registry.get(_text(body, "name"))
        hook = _text(body, "hook")
        if hook not in HOOKS:
            raise BadRequest(f"hook must be one of {', '.join(HOOKS)}")
        timeout = _timeout(body, generation.spec.timeout)
        async with self._holding(body, own=generation.spec.name), generation.slot():
            return {"result": await generation.host.hook(hook, timeout=timeout)}

    async def pts_files(self, body: Any) -> Any:
        host = self.registry.get(_text(body, "name")).host
        which = _text(body, "which")
        if which not in ("input", "output"):
            raise BadRequest("which must be input or output")
        files = await asyncio.to_thread(read_dir_files, host.exchange_dir() / which,
                                        max_bytes=MAX_SCRIPT)
        return {"files": files}

    async def pts_script(self, body: Any) -> Any:
        host = self.registry.get(_text(body, "name")).host
        hook = _text(body, "hook")
        if hook not in ("run", *HOOKS):
            raise BadRequest(f"hook must be one of run, {', '.join(HOOKS)}")
        argv = host.script(hook)
        if not argv:
            return {"text": None, "path": None}
        path = Path(argv[0])
        try:
            text = await asyncio.to_thread(_read_text, path)
        except OSError as exc:
            raise NotFound(f"cannot read {path}: {exc.strerror}") from exc
        return {"text": text, "path": str(path)}

    async def pts_update(self, body: Any) -> Any:
        name = _text(body, "name")
        changes = _get(body, "changes")
        if not isinstance(changes, Mapping) or set(changes) - UPDATABLE or not changes:
            raise BadRequest(f"changes must be a map of {', '.join(sorted(UPDATABLE))}")
        async with self._holding(body):
            await self._deployer().update(name, changes, who=_who(body))
        return {"spec": self.registry.get(name).spec.public()}

    async def pts_deploy(self, body: Any) -> Any:
        return await self._deployer().deploy(_text(body, "name"), _field(body, "spec"),
                                             who=_who(body))

    async def pts_replace(self, body: Any) -> Any:
        return await self._deployer().replace(_text(body, "name"), _field(body, "spec"),
                                              who=_who(body))

    async def pts_undeploy(self, body: Any) -> Any:
        return await self._deployer().undeploy(_text(body, "name"), who=_who(body))

    async def pts_history(self, body: Any) -> Any:
        limit = _int(body, "limit", 100, 1, MAX_LIST)
        return {"events": await self._deployer().history(_text(body, "name"), limit=limit)}

    async def reload(self, body: Any) -> Any:
        if self.reloader is None:
            raise Unavailable("this daemon cannot reload")
        return {"outcome": await self.reloader()}

    def _deployer(self) -> Deployer:
        if self.deployer is None:
            raise Unavailable("this daemon does not deploy PTS")
        return self.deployer

    async def demo_reset(self, body: Any) -> Any:
        async with self._holding(body):
            restored = await asyncio.to_thread(install_scripts, self.home, restore=True)
        return {"restored": restored}

    async def run(self, body: Any) -> Any:
        """A synchronous run; with a ``lock``, it holds that PTS's slot while it runs."""
        pts = _text(body, "pts")
        lock = _lock(body)
        if lock is None or lock == pts:
            return await self._run(pts, body)
        async with self.registry.get(lock).slot():
            return await self._run(pts, body)

    async def _run(self, pts: str, body: Any) -> dict[str, Any]:
        job, result = await self.scheduler.run(pts, await self._input(body),
                                               timeout=_get(body, "timeout"),
                                               owner=_owner(body) or "")
        return _ran(job, result, self.result_room)

    def _holding(self, body: Any, *, own: str | None = None) -> AbstractAsyncContextManager[None]:
        """A slot of the PTS the optional ``lock`` names, held around an operation (admitted
        under that PTS's limits: busy at once when its queue is full); nothing when there is no
        ``lock`` or it names ``own``, the PTS whose slot the operation holds anyway."""
        name = _lock(body)
        if name is None or name == own:
            return contextlib.nullcontext()
        return self.registry.get(name).slot()

    async def submit(self, body: Any) -> Any:
        job = await self.scheduler.submit(
            _text(body, "pts"), await self._input(body), timeout=_get(body, "timeout"),
            owner=_owner(body) or "", key=_optional(body, "idempotency_key", MAX_KEY))
        return {"job": job.public()}

    async def upload(self, body: Any) -> Any:
        if self.uploads is None:
            raise Unavailable("this daemon takes no uploads")
        return await self.uploads.put(body)

    async def _input(self, body: Any) -> Any:
        """A run's ``input``, or the one uploaded in parts that ``input_upload`` names."""
        if isinstance(body, dict) and "input_upload" in body and self.uploads is not None:
            return await self.uploads.take(body["input_upload"])
        return _field(body, "input")

    async def job_status(self, body: Any) -> Any:
        job = await self.scheduler.status(_get(body, "job"), owner=_owner(body))
        return {"job": job.public()}

    async def job_result(self, body: Any) -> Any:
        job, result = await self.scheduler.result(_get(body, "job"), owner=_owner(body),
                                                  max_bytes=self.result_room)
        return {"job": job.public(), "result": result}

    async def job_input(self, body: Any) -> Any:
        job = await self.scheduler.status(_get(body, "job"), owner=_owner(body))
        blob = await self.scheduler.store.input(job.id)
        if not blob:
            raise NotFound(f"job {job.id} has no recorded input")
        if len(blob) > self.result_room:
            raise TooLarge(f"the input of job {job.id} ({len(blob)} bytes) is over the message "
                           "limit", job=job.id, size=len(blob))
        return {"job": job.public(), "input": unpack(blob)}

    async def job_result_chunk(self, body: Any) -> Any:
        offset = _int(body, "offset", 0, 0, 2**62)
        limit = _int(body, "limit", self.result_room, 1, 2**62)
        job, size, data = await self.scheduler.result_chunk(
            _get(body, "job"), offset, min(limit, self.result_room), owner=_owner(body))
        return {"job": job.public(), "size": size, "offset": offset, "data": data}

    async def job_list(self, body: Any) -> Any:
        pts = _get(body, "pts")
        status = _get(body, "status")
        if pts is not None and not isinstance(pts, str):
            raise BadRequest("pts must be a string")
        if status is not None and status not in {s.value for s in Status}:
            raise BadRequest(f"status must be one of {', '.join(s.value for s in Status)}")
        limit = _int(body, "limit", 100, 1, MAX_LIST)
        offset = _int(body, "offset", 0, 0, 2**62)
        state = Status(status) if status else None
        owner = _owner(body)
        window = {name: _time(body, name) for name in ("since", "until")}
        store = self.scheduler.store
        jobs = await store.list(pts=pts, status=state, limit=limit, offset=offset, owner=owner,
                                **window)
        return {"jobs": [j.public() for j in jobs],
                "total": await store.count(pts=pts, status=state, owner=owner, **window)}

    async def job_cancel(self, body: Any) -> Any:
        job = await self.scheduler.cancel(_get(body, "job"), owner=_owner(body))
        return {"job": job.public()}

    async def job_delete(self, body: Any) -> Any:
        job = await self.scheduler.delete(_get(body, "job"), owner=_owner(body))
        return {"job": job.public()}

    async def jobs_cleanup(self, body: Any) -> Any:
        max_age = _get(body, "max_age")
        max_bytes = _get(body, "max_bytes")
        for name, value in (("max_age", max_age), ("max_bytes", max_bytes)):
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float) or value < 0):
                raise BadRequest(f"{name} must be a non-negative number")
        deleted = await self.scheduler.store.cleanup(
            max_age=max_age, max_bytes=None if max_bytes is None else int(max_bytes))
        return {"deleted": deleted}

    async def job_watch(self, body: Any) -> AsyncIterator[Any]:
        job_id = _get(body, "job")
        after = _int(body, "after", 0, 0, 2**62)
        job = await self.scheduler.status(job_id, owner=_owner(body))
        events = self.scheduler.events_of(job.id)
        if events is None or (events.after(after) == [] and events.closed):
            # The job's events are gone (or all seen): its status says where it stands.
            yield summary(job, max(after, events.seq if events else 0) + 1)
            return
        try:
            async for event in events.follow(after, idle=WATCH_IDLE):
                yield event
        except TimeoutError:
            raise RunTimeout("no event within the watch's idle time; watch again") from None

    def tables(self) -> tuple[Mapping[str, Handler], Mapping[str, StreamHandler]]:
        """Operation name -> handler, as plain data."""
        handlers: dict[str, Handler] = {
            "ping": self.ping, "status": self.status, "stats": self.stats,
            "pts.list": self.pts_list,
            "pts.describe": self.pts_describe, "pts.hook": self.pts_hook,
            "pts.files": self.pts_files, "pts.script": self.pts_script,
            "pts.update": self.pts_update, "demo.reset": self.demo_reset,
            "pts.deploy": self.pts_deploy, "pts.replace": self.pts_replace,
            "pts.undeploy": self.pts_undeploy, "pts.history": self.pts_history,
            "reload": self.reload,
            "run": self.run, "submit": self.submit,
            "upload": self.upload,
            "job.status": self.job_status, "job.result": self.job_result,
            "job.result_chunk": self.job_result_chunk, "job.input": self.job_input,
            "job.list": self.job_list, "job.cancel": self.job_cancel,
            "job.delete": self.job_delete, "jobs.cleanup": self.jobs_cleanup,
        }
        return handlers, {"job.watch": self.job_watch}


def _read_text(path: Path) -> str:
    with path.open("rb") as handle:
        return handle.read(MAX_SCRIPT).decode(errors="replace")


def _ran(job: Job, result: Any, room: int) -> dict[str, Any]:
    """A run's reply; a result too large for it was recorded: the error says where it is."""
    if job.result_size > room:
        raise TooLarge(f"the result of job {job.id} ({job.result_size} bytes) is over the "
                       "message limit; it is stored: read it in chunks (job.result_chunk)",
                       job=job.id, size=job.result_size)
    return {"job": job.id, "result": result}


def _get(body: Any, key: str) -> Any:
    if not isinstance(body, dict):    # a msgpack map is a dict (and this is not an ABC check)
        raise BadRequest("request body must be a map")
    return body.get(key)


def _field(body: Any, key: str) -> Any:
    if not isinstance(body, dict) or key not in body:
        raise BadRequest(f"request body needs {key!r}")
    return body[key]


def _text(body: Any, key: str) -> str:
    value = _get(body, key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} must be a non-empty string")
    return value


def _lock(body: Any) -> str | None:
    """The optional ``lock``: the name of the PTS whose slot an operation holds while it runs
    (pnsweb's /v0.6 routes: the reference's one lock, the default PTS's)."""
    name = _get(body, "lock")
    if name is not None and (not isinstance(name, str) or not name):
        raise BadRequest("'lock' must be the name of a PTS")
    return name


def _who(body: Any) -> str:
    """Who asks for a change, as the caller says (pnsweb: the user; the CLI: the OS user)."""
    who = _get(body, "who")
    if who is None:
        return "unknown"
    if not isinstance(who, str) or not who or len(who) > MAX_WHO:
        raise BadRequest(f"'who' must be a non-empty string of at most {MAX_WHO} characters")
    return who


def _owner(body: Any) -> str | None:
    """The web user the call is made for, as pnsweb says (it holds the node's key, and so does
    every caller); None: the operator, whose calls reach every job."""
    return _optional(body, "owner", MAX_OWNER)


def _optional(body: Any, key: str, longest: int) -> str | None:
    value = _get(body, key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > longest:
        raise BadRequest(f"{key!r} must be a non-empty string of at most {longest} characters")
    return value


def _int(body: Any, key: str, default: int, low: int, high: int) -> int:
    value = _get(body, key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{key!r} must be an integer from {low} to {high}")
    return value


def _time(body: Any, key: str) -> float | None:
    """An optional instant in epoch seconds: a finite, non-negative number."""
    value = _get(body, key)
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value < 0):
        raise BadRequest(f"{key!r} must be a non-negative number of epoch seconds")
    return float(value)


def _timeout(body: Any, cap: float) -> float:
    value = _get(body, "timeout")
    if value is None:
        return cap
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise BadRequest("timeout must be a positive number of seconds")
    return min(float(value), cap)

