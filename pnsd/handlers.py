"""One handler per protocol operation: check the request body, call the daemon, shape the reply.

Owns the translation between message bodies (SPEC.md, "Operations") and the scheduler,
registry and store (checking one field of a body is :mod:`pnsd.bodies`'s). The tables at
the bottom are plain data; a test checks that every operation in
:data:`protocols.messages.OPERATIONS` has exactly one handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pnsd import bodies
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
ENVELOPE = 64 * 1024  # bytes of a reply besides the result: the rest of a message's room


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
        span = bodies.integer(body, "span", SPAN, STEP, SPAN)
        return self.scheduler.finisher.rolling.figures(self.scheduler.clock(), span=span)

    async def pts_list(self, body: Any) -> Any:
        return {"pts": [
            {"name": g.spec.name, "mode": g.spec.mode.value, "version": g.spec.version,
             "title": g.spec.interface.title, "description": g.spec.description,
             "keywords": list(g.spec.interface.keywords), "state": g.host.state().state}
            for g in sorted(self.registry.generations(), key=lambda g: g.spec.name)
        ]}

    async def pts_describe(self, body: Any) -> Any:
        generation = self.registry.get(bodies.text(body, "name"))
        spec = generation.spec
        return {"spec": spec.public(), "state": generation.public(),
                "interface": spec.interface.described(process=spec.mode is Mode.PROCESS),
                "sync_results_kept": self.scheduler.record_sync}

    async def pts_hook(self, body: Any) -> Any:
        generation = self.registry.get(bodies.text(body, "name"))
        hook = bodies.text(body, "hook")
        if hook not in HOOKS:
            raise BadRequest(f"hook must be one of {', '.join(HOOKS)}")
        timeout = bodies.timeout(body, generation.spec.timeout)
        async with self._holding(body, own=generation.spec.name), generation.slot():
            return {"result": await generation.host.hook(hook, timeout=timeout)}

    async def pts_files(self, body: Any) -> Any:
        host = self.registry.get(bodies.text(body, "name")).host
        which = bodies.text(body, "which")
        if which not in ("input", "output"):
            raise BadRequest("which must be input or output")
        files = await asyncio.to_thread(read_dir_files, host.exchange_dir() / which,
                                        max_bytes=MAX_SCRIPT)
        return {"files": files}

    async def pts_script(self, body: Any) -> Any:
        host = self.registry.get(bodies.text(body, "name")).host
        hook = bodies.text(body, "hook")
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
        name = bodies.text(body, "name")
        changes = bodies.get(body, "changes")
        if not isinstance(changes, Mapping) or set(changes) - UPDATABLE or not changes:
            raise BadRequest(f"changes must be a map of {', '.join(sorted(UPDATABLE))}")
        async with self._holding(body):
            await self._deployer().update(name, changes, who=bodies.who(body))
        return {"spec": self.registry.get(name).spec.public()}

    async def pts_deploy(self, body: Any) -> Any:
        return await self._deployer().deploy(
            bodies.text(body, "name"), bodies.required(body, "spec"), who=bodies.who(body))

    async def pts_replace(self, body: Any) -> Any:
        return await self._deployer().replace(
            bodies.text(body, "name"), bodies.required(body, "spec"), who=bodies.who(body))

    async def pts_undeploy(self, body: Any) -> Any:
        return await self._deployer().undeploy(bodies.text(body, "name"), who=bodies.who(body))

    async def pts_history(self, body: Any) -> Any:
        limit = bodies.integer(body, "limit", 100, 1, MAX_LIST)
        return {"events": await self._deployer().history(bodies.text(body, "name"), limit=limit)}

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

    def run(self, body: Any) -> Coroutine[Any, Any, Any]:
        """A synchronous run; with a ``lock``, it holds that PTS's slot while it runs.

        The run's own coroutine, returned rather than awaited in one of this method's: a
        coroutine layer less on every run (bench/FINDINGS.md, "Worker path, second pass").
        """
        pts = bodies.text(body, "pts")
        lock = bodies.lock(body)
        if lock is None or lock == pts:
            return self._run(pts, body)
        return self._run_locked(lock, pts, body)

    async def _run_locked(self, lock: str, pts: str, body: Any) -> dict[str, Any]:
        async with self.registry.get(lock).slot():
            return await self._run(pts, body)

    async def _run(self, pts: str, body: Any) -> dict[str, Any]:
        job, result = await self.scheduler.run(pts, await self._input(body),
                                               timeout=bodies.get(body, "timeout"),
                                               owner=bodies.owner(body) or "")
        return _ran(job, result, self.result_room)

    def _holding(self, body: Any, *, own: str | None = None) -> AbstractAsyncContextManager[None]:
        """A slot of the PTS the optional ``lock`` names, held around an operation (admitted
        under that PTS's limits: busy at once when its queue is full); nothing when there is no
        ``lock`` or it names ``own``, the PTS whose slot the operation holds anyway."""
        name = bodies.lock(body)
        if name is None or name == own:
            return contextlib.nullcontext()
        return self.registry.get(name).slot()

    async def submit(self, body: Any) -> Any:
        job = await self.scheduler.submit(
            bodies.text(body, "pts"), await self._input(body),
            timeout=bodies.get(body, "timeout"), owner=bodies.owner(body) or "",
            key=bodies.optional(body, "idempotency_key", bodies.MAX_KEY))
        return {"job": job.public()}

    async def upload(self, body: Any) -> Any:
        if self.uploads is None:
            raise Unavailable("this daemon takes no uploads")
        return await self.uploads.put(body)

    async def _input(self, body: Any) -> Any:
        """A run's ``input``, or the one uploaded in parts that ``input_upload`` names."""
        if isinstance(body, dict) and "input_upload" in body and self.uploads is not None:
            return await self.uploads.take(body["input_upload"])
        return bodies.required(body, "input")

    async def job_status(self, body: Any) -> Any:
        job = await self.scheduler.status(bodies.get(body, "job"), owner=bodies.owner(body))
        return {"job": job.public()}

    async def job_result(self, body: Any) -> Any:
        job, result = await self.scheduler.result(
            bodies.get(body, "job"), owner=bodies.owner(body), max_bytes=self.result_room)
        return {"job": job.public(), "result": result}

    async def job_input(self, body: Any) -> Any:
        job = await self.scheduler.status(bodies.get(body, "job"), owner=bodies.owner(body))
        blob = await self.scheduler.store.input(job.id)
        if not blob:
            raise NotFound(f"job {job.id} has no recorded input")
        if len(blob) > self.result_room:
            raise TooLarge(f"the input of job {job.id} ({len(blob)} bytes) is over the message "
                           "limit", job=job.id, size=len(blob))
        return {"job": job.public(), "input": unpack(blob)}

    async def job_result_chunk(self, body: Any) -> Any:
        offset = bodies.integer(body, "offset", 0, 0, 2**62)
        limit = bodies.integer(body, "limit", self.result_room, 1, 2**62)
        job, size, data = await self.scheduler.result_chunk(
            bodies.get(body, "job"), offset, min(limit, self.result_room),
            owner=bodies.owner(body))
        return {"job": job.public(), "size": size, "offset": offset, "data": data}

    async def job_list(self, body: Any) -> Any:
        pts = bodies.get(body, "pts")
        status = bodies.get(body, "status")
        if pts is not None and not isinstance(pts, str):
            raise BadRequest("pts must be a string")
        if status is not None and status not in {s.value for s in Status}:
            raise BadRequest(f"status must be one of {', '.join(s.value for s in Status)}")
        limit = bodies.integer(body, "limit", 100, 1, MAX_LIST)
        offset = bodies.integer(body, "offset", 0, 0, 2**62)
        state = Status(status) if status else None
        owner = bodies.owner(body)
        window = {name: bodies.instant(body, name) for name in ("since", "until")}
        store = self.scheduler.store
        jobs = await store.list(pts=pts, status=state, limit=limit, offset=offset, owner=owner,
                                **window)
        return {"jobs": [j.public() for j in jobs],
                "total": await store.count(pts=pts, status=state, owner=owner, **window)}

    async def job_cancel(self, body: Any) -> Any:
        job = await self.scheduler.cancel(bodies.get(body, "job"), owner=bodies.owner(body))
        return {"job": job.public()}

    async def job_delete(self, body: Any) -> Any:
        job = await self.scheduler.delete(bodies.get(body, "job"), owner=bodies.owner(body))
        return {"job": job.public()}

    async def jobs_cleanup(self, body: Any) -> Any:
        max_age = bodies.get(body, "max_age")
        max_bytes = bodies.get(body, "max_bytes")
        for name, value in (("max_age", max_age), ("max_bytes", max_bytes)):
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, int | float) or value < 0):
                raise BadRequest(f"{name} must be a non-negative number")
        deleted = await self.scheduler.store.cleanup(
            max_age=max_age, max_bytes=None if max_bytes is None else int(max_bytes))
        return {"deleted": deleted}

    async def job_watch(self, body: Any) -> AsyncIterator[Any]:
        job_id = bodies.get(body, "job")
        after = bodies.integer(body, "after", 0, 0, 2**62)
        job = await self.scheduler.status(job_id, owner=bodies.owner(body))
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
