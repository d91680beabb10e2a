"""Hot swap: deploy, replace and undeploy a PTS while the daemon keeps serving.

Owns the swap procedure and its guarantees. A new generation is started beside the current one
and must pass its init hook and optional self-test (:mod:`pnsd.selftest`) within the swap
timeout; only then is its spec written to ``pts.d`` (:mod:`pnsd.specfiles`) and the registry
switched to it in one step. The old generation drains in the background and is stopped; runs
it still has after the drain timeout are cancelled with the reason. If anything fails before
the switch, the new generation is stopped, the running version keeps serving and the caller gets
the error with the new generation's output. One change per PTS at a time: a per-name lock, and
a second change while one is under way is a conflict (reload waits instead). Every attempt is
audited (:mod:`pnsd.audit`). It does not parse config files (:mod:`pnsd.config` does, on reload)
and never touches job records.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from pnsd import selftest
from pnsd.audit import AuditEvent, AuditLog
from pnsd.errors import BadRequest, Conflict, DaemonError, RunTimeout, StorageError, Unavailable
from pnsd.hosts.inproc import forget_modules
from pnsd.registry import Generation, Registry
from pnsd.spec import Mode, PtsSpec, parse_spec
from pnsd.specfiles import SpecFiles

log = structlog.get_logger(__name__)

OUTPUT_TAIL = 1000      # characters of a failed generation's stderr/stdout quoted in the error
Source = Mapping[str, Any] | PtsSpec     # a table from a caller, or a spec read on reload


@dataclass
class SwapTiming:
    swap: float = 60.0      # seconds a new generation has to start, init and self-test
    drain: float = 30.0     # seconds a retired generation's runs get before they are cancelled


@dataclass
class Deployer:
    """Deploy, replace, undeploy and reload, on top of the registry's generations."""

    registry: Registry
    audit: AuditLog
    files: SpecFiles
    timing: SwapTiming = field(default_factory=SwapTiming)
    failures: dict[str, str] = field(default_factory=dict)   # PTS that could not start
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict, init=False, repr=False)

    async def deploy(self, name: str, table: Any, *, who: str) -> dict[str, Any]:
        """A new PTS; conflict if the name is taken or being changed."""
        async with self._audited(name, "deploy", who) as event, self._lock(name, wait=False):
            return await self._deploy(event, _table(name, table), persist=True)

    async def replace(self, name: str, table: Any, *, who: str) -> dict[str, Any]:
        """A new generation of an existing PTS; not_found if there is none."""
        async with self._audited(name, "replace", who) as event, self._lock(name, wait=False):
            return await self._replace(event, _table(name, table), persist=True)

    async def update(self, name: str, changes: Mapping[str, Any], *, who: str) -> dict[str, Any]:
        """A new generation of a PTS with a few settings changed (the reference's pnsconf).

        Not written to ``pts.d``: like a change made by hand, a reload reverts it.
        """
        async with self._audited(name, "update", who) as event, self._lock(name, wait=False):
            table = {key: value for key, value in self.registry.get(name).spec.public().items()
                     if key != "name" and value is not None} | dict(changes)
            return await self._replace(event, table, persist=False)

    async def undeploy(self, name: str, *, who: str) -> dict[str, Any]:
        """Stop serving a PTS: queued runs fail now, running ones drain; its file goes."""
        async with self._audited(name, "undeploy", who) as event, self._lock(name, wait=False):
            return await self._undeploy(event, persist=True)

    async def history(self, name: str, *, limit: int = 100) -> list[dict[str, Any]]:
        return [event.public() for event in await self.audit.history(name, limit=limit)]

    async def apply(self, specs: Mapping[str, PtsSpec], *, who: str = "reload") -> dict[str, str]:
        """Make the registry serve ``specs`` (a reload), changing only what differs."""
        outcome: dict[str, str] = {}
        for name, spec in specs.items():
            async with self._lock(name, wait=True):
                current = self.registry.find(name)
                if current is not None and current.spec == spec:
                    continue
                action = "replace" if current else "deploy"
                try:
                    async with self._audited(name, action, who) as event:
                        if current is None:
                            await self._deploy(event, spec, persist=False)
                        else:
                            await self._replace(event, spec, persist=False)
                    outcome[name] = "replaced" if current else "added"
                except DaemonError as exc:
                    outcome[name] = f"{'kept' if current else 'failed'}: {exc.message}"
                    if current is None:
                        self.failures[name] = exc.message
        for name in sorted(set(self.registry.names()) - set(specs)):
            outcome[name] = await self._remove_on_reload(name, who)
        for name in set(self.failures) - set(specs):
            del self.failures[name]      # gone from the config: no longer expected to serve
        return outcome

    async def _remove_on_reload(self, name: str, who: str) -> str:
        async with self._lock(name, wait=True):
            if self.registry.find(name) is None:
                return "removed"
            try:
                async with self._audited(name, "undeploy", who) as event:
                    await self._undeploy(event, persist=False)
            except DaemonError as exc:
                return f"kept: {exc.message}"
            return "removed"

    # -- the three changes, with the name's lock held and the audit event open ----------------

    async def _deploy(self, event: AuditEvent, source: Source, *, persist: bool) -> dict[str, Any]:
        if self.registry.find(event.pts) is not None:
            raise Conflict(f"PTS {event.pts} exists already: replace it instead", pts=event.pts)
        spec = self._spec(event, source)
        text = await self._prepare_file(spec, source, persist=persist)
        generation = await self._ready(spec, serving=None)
        await self._write(generation, text)
        self.registry.install(generation)
        self.failures.pop(spec.name, None)
        return _reply(event, generation)

    async def _replace(self, event: AuditEvent, source: Source, *, persist: bool) -> dict[str, Any]:
        current = self.registry.get(event.pts)
        event.old_version = current.spec.version
        spec = self._spec(event, source)
        text = await self._prepare_file(spec, source, persist=persist)
        generation = await self._ready(spec, serving=current.spec.version)
        await self._write(generation, text)
        self.registry.switch(generation, drain=self.timing.drain)
        return _reply(event, generation)

    async def _undeploy(self, event: AuditEvent, *, persist: bool) -> dict[str, Any]:
        current = self.registry.get(event.pts)
        event.old_version = current.spec.version
        if persist:
            await asyncio.to_thread(self.files.check_removable, event.pts)
            try:
                await asyncio.to_thread(self.files.remove, event.pts)
            except OSError as exc:
                raise StorageError(f"cannot remove the spec file of {event.pts}: {exc}") from exc
        generation = self.registry.remove(event.pts)
        reason = f"PTS {event.pts} was undeployed"
        generation.close(reason)
        self.registry.retire_later(generation, drain=self.timing.drain, reason=reason)
        return _reply(event, None)

    # -- parts --------------------------------------------------------------------------------

    @staticmethod
    def _spec(event: AuditEvent, source: Source) -> PtsSpec:
        spec = source if isinstance(source, PtsSpec) else parse_spec(event.pts, source)
        event.new_version = spec.version
        return spec

    async def _prepare_file(self, spec: PtsSpec, source: Source, *, persist: bool) -> str | None:
        """Pre-flight checks; the spec file's text when it is to be written (else None)."""
        await asyncio.to_thread(selftest.check, spec)
        if not persist or isinstance(source, PtsSpec):
            return None
        await asyncio.to_thread(self.files.check_writable, spec.name)
        return self.files.render(spec.name, source)

    async def _write(self, generation: Generation, text: str | None) -> None:
        if text is None:
            return
        try:
            await asyncio.to_thread(self.files.write_text, generation.spec.name, text)
        except OSError as exc:
            await generation.host.stop(grace=1.0)
            raise StorageError(f"cannot write the spec file of {generation.spec.name}: "
                               f"{exc}; nothing was changed") from exc

    async def _ready(self, spec: PtsSpec, *, serving: str | None) -> Generation:
        """A started generation that passed init and self-test, within the swap timeout."""
        if spec.mode is Mode.INPROC:
            forget_modules(spec)     # a fresh import: the new code, not the cached module
        stage = "start"
        generation: Generation | None = None
        try:
            async with asyncio.timeout(self.timing.swap):
                generation = await self.registry.start(spec)
                stage = "init"
                await selftest.init(generation)
                stage = "selftest"
                await selftest.run(generation)
        except Exception as exc:
            if generation is not None:
                await generation.host.stop(grace=1.0)
            raise self._failure(exc, spec, stage, serving) from exc
        except BaseException:
            if generation is not None:
                await generation.host.stop(grace=1.0)
            raise
        return generation

    def _failure(self, exc: Exception, spec: PtsSpec, stage: str,
                 serving: str | None) -> DaemonError:
        """The error a caller gets for a generation that did not get ready, with its output."""
        keeps = f"; version {serving or '(unnamed)'} keeps serving" if serving is not None else ""
        what = f"PTS {spec.name} version {spec.version or '(unnamed)'}"
        if isinstance(exc, TimeoutError):
            return RunTimeout(f"{what} was not ready within {self.timing.swap:g} s "
                              f"(its {stage} did not finish){keeps}", pts=spec.name, stage=stage)
        if not isinstance(exc, DaemonError):
            exc = Unavailable(f"{type(exc).__name__}: {exc}")
        details = dict(exc.details)
        message = f"{what} failed its {stage}: {exc.message}"
        output = str(details.get("stderr") or details.get("stdout") or "").strip()
        if output and output not in message:
            message += f"; output: {output[-OUTPUT_TAIL:]}"
        error = type(exc)(message + keeps, **details)
        error.details.update(pts=spec.name, stage=stage)
        log.warning("generation_not_ready", pts=spec.name, version=spec.version, stage=stage,
                    error=message)
        return error

    def busy(self, name: str) -> bool:
        """True while a deploy, replace, update or undeploy of PTS ``name`` is under way."""
        lock = self._locks.get(name)
        return lock is not None and lock.locked()

    @contextlib.asynccontextmanager
    async def _lock(self, name: str, *, wait: bool) -> AsyncIterator[None]:
        if self.busy(name) and not wait:
            raise Conflict(f"another deploy, replace or undeploy of PTS {name} is under way",
                           pts=name)
        async with self._locks.setdefault(name, asyncio.Lock()):
            yield

    @contextlib.asynccontextmanager
    async def _audited(self, name: str, action: str, who: str) -> AsyncIterator[AuditEvent]:
        event = AuditEvent(pts=name, action=action, who=who)
        try:
            yield event
        except DaemonError as exc:
            event.outcome, event.error = exc.code, exc.message
            await self.audit.record(event)
            raise
        except Exception as exc:   # a bug: still a change attempt worth its audit line
            event.outcome, event.error = "internal", repr(exc)
            await self.audit.record(event)
            raise
        await self.audit.record(event)


def _table(name: str, table: Any) -> Mapping[str, Any]:
    if not isinstance(table, Mapping):
        raise BadRequest("'spec' must be a map of spec keys (as in a [pts.NAME] table)")
    if "name" in table and table["name"] != name:
        raise BadRequest(f"the spec is named {table['name']!r}, not {name!r}")
    return table


def _reply(event: AuditEvent, generation: Generation | None) -> dict[str, Any]:
    return {"name": event.pts, "action": event.action, "old_version": event.old_version,
            "new_version": event.new_version,
            "generation": generation.number if generation else None}
