"""The PTS registry: which PTS exist, the generation that serves each, and admission.

Owns the map name -> current :class:`Generation` and every generation's slots and bounded
queue. A run is admitted (or refused as busy at once), waits for a slot, runs on the host of the
generation it was admitted to, and releases the slot. It does not record jobs or talk to
sockets; hosts are built by the factory it is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from pnsd.errors import Busy, NotFound, Unavailable
from pnsd.hosts.base import Host
from pnsd.spec import PtsSpec

log = structlog.get_logger(__name__)

HostFactory = Callable[[PtsSpec], Host]


@dataclass
class Generation:
    """One started incarnation of a PTS: a host plus its admission limits."""

    spec: PtsSpec
    host: Host
    number: int
    started: float = field(default_factory=time.time)
    admitted: int = 0          # runs holding or waiting for a slot
    running: int = 0           # runs holding a slot
    draining: bool = False

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.spec.slots)
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Admit a run or refuse it as busy at once; then hold a slot while it runs."""
        if self.draining:
            raise Unavailable(f"PTS {self.spec.name} generation {self.number} is draining")
        if self.admitted >= self.spec.slots + self.spec.queue:
            raise Busy(
                f"PTS {self.spec.name} is busy: {self.running} running, "
                f"{self.admitted - self.running} queued (limit {self.spec.queue})",
                retry_after=1,
            )
        self.admitted += 1
        self._idle.clear()
        try:
            async with self._slots:
                self.running += 1
                try:
                    yield
                finally:
                    self.running -= 1
        finally:
            self.admitted -= 1
            if self.admitted == 0:
                self._idle.set()

    async def drained(self) -> None:
        await self._idle.wait()

    def public(self) -> dict[str, Any]:
        return {
            "generation": self.number, "version": self.spec.version, "mode": self.spec.mode.value,
            "running": self.running, "queued": self.admitted - self.running,
            "slots": self.spec.slots, "queue": self.spec.queue, **self.host.state().public(),
        }


class Registry:
    """Name -> current generation. Safe to use from the daemon's event loop only."""

    def __init__(self, factory: HostFactory) -> None:
        self._factory = factory
        self._current: dict[str, Generation] = {}
        self._counter = 0
        self._retiring: set[asyncio.Task[None]] = set()

    def names(self) -> list[str]:
        return sorted(self._current)

    def get(self, name: str) -> Generation:
        try:
            return self._current[name]
        except KeyError:
            raise NotFound(f"no PTS named {name!r}", pts=name) from None

    def generations(self) -> Iterable[Generation]:
        return self._current.values()

    async def start(self, spec: PtsSpec) -> Generation:
        """Build and start a generation for ``spec`` (not yet serving)."""
        self._counter += 1
        generation = Generation(spec, self._factory(spec), self._counter)
        try:
            await generation.host.start()
        except BaseException:
            await generation.host.stop(grace=1.0)
            raise
        return generation

    def install(self, generation: Generation) -> Generation | None:
        """Make ``generation`` current for its name; return the one it replaces."""
        previous = self._current.get(generation.spec.name)
        self._current[generation.spec.name] = generation
        log.info(
            "pts_installed", pts=generation.spec.name, mode=generation.spec.mode.value,
            version=generation.spec.version, generation=generation.number,
            replaced=previous.number if previous else None,
        )
        return previous

    async def add_all(self, specs: Iterable[PtsSpec]) -> dict[str, str]:
        """Start and install each spec; a PTS that fails to start is reported, not fatal."""
        failures: dict[str, str] = {}
        for spec in specs:
            try:
                self.install(await self.start(spec))
            except Exception as exc:  # one broken PTS must not keep the others down
                reason = getattr(exc, "message", None) or repr(exc)
                failures[spec.name] = reason
                log.error("pts_start_failed", pts=spec.name, reason=reason)
        return failures

    async def retire(self, generation: Generation, *, drain: float) -> None:
        """Let a replaced generation finish what it admitted (up to ``drain`` s), then stop it."""
        generation.draining = True
        try:
            async with asyncio.timeout(drain):
                await generation.drained()
        except TimeoutError:
            log.warning("drain_timeout", pts=generation.spec.name, generation=generation.number,
                        left=generation.admitted)
        await generation.host.stop(grace=2.0)
        log.info("generation_stopped", pts=generation.spec.name, generation=generation.number)

    async def replace(self, spec: PtsSpec, *, drain: float = 30.0) -> Generation:
        """Start ``spec`` beside the current generation, switch to it, retire the old one.

        If the new generation fails to start, the current one keeps serving and the error
        propagates. The old generation drains in the background.
        """
        generation = await self.start(spec)
        previous = self.install(generation)
        if previous is not None:
            task = asyncio.get_running_loop().create_task(self.retire(previous, drain=drain))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return generation

    async def apply(self, specs: Mapping[str, PtsSpec], *, drain: float = 30.0) -> dict[str, str]:
        """Make the registry serve ``specs``: start new and changed PTS, retire removed ones.

        A PTS whose new spec fails to start keeps its old generation; the outcome maps each
        touched name to "added", "replaced", "removed" or the reason it was kept.
        """
        outcome: dict[str, str] = {}
        old_ones: list[Generation] = []
        for name, spec in specs.items():
            current = self._current.get(name)
            if current is not None and current.spec == spec:
                continue
            try:
                generation = await self.start(spec)
            except Exception as exc:  # the old generation keeps serving
                outcome[name] = f"kept: {getattr(exc, 'message', None) or exc!r}"
                continue
            previous = self.install(generation)
            outcome[name] = "replaced" if previous else "added"
            if previous is not None:
                old_ones.append(previous)
        for name in set(self._current) - set(specs):
            old_ones.append(self._current.pop(name))
            outcome[name] = "removed"
        await asyncio.gather(*(self.retire(g, drain=drain) for g in old_ones))
        return outcome

    async def stop_all(self, *, grace: float) -> None:
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        generations = list(self._current.values())
        self._current.clear()
        for generation in generations:
            generation.draining = True
        await asyncio.gather(*(g.host.stop(grace=grace) for g in generations))
