"""The PTS registry: which PTS exist, the generation that serves each, and admission.

Owns the map name -> current :class:`Generation` and every generation's slots, bounded queue
and input check (its validators, compiled once when the generation is built). A run is admitted
(or refused as busy at once), waits for a slot, runs on the host of the generation it was
admitted to, and releases the slot. A host that keeps its own line of runs (worker mode) gets
every admitted run at once and hands each a worker as one frees up. It also retires
generations: a retired one admits nothing new, gets a drain time for what it admitted, then has
its leftover runs cancelled (through the canceller the scheduler registers) and its host
stopped. It does not record jobs, decide swaps (:mod:`pnsd.deploy` does) or talk to sockets;
hosts are built by the factory it is given.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from pnsd.errors import Busy, NotFound, Unavailable
from pnsd.hosts.base import Host
from pnsd.spec import PtsSpec
from pnsd.validation import InputCheck

log = structlog.get_logger(__name__)

HostFactory = Callable[[PtsSpec], Host]
Canceller = Callable[["Generation", str], Awaitable[None]]
CANCEL_WAIT = 5.0     # seconds cancelled runs of a retired generation get to wind down


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
    refusal: str = ""          # set by close(): why queued runs are refused

    def __post_init__(self) -> None:
        # A host with its own line gets every admitted run at once: it needs no slots here.
        self._limited = not self.host.queues_runs
        self._free = self.spec.slots         # slots nobody holds (when limited)
        self._limit = self.spec.slots + self.spec.queue   # admitted at most (a frozen spec)
        self._waiters: deque[asyncio.Future[None]] = deque()   # queued runs, first come first
        # done when no run is admitted any more: made when someone first waits for that, so
        # a run admitted or leaving touches no event
        self._drain: asyncio.Future[None] | None = None
        # compiled once per generation: every run's input is checked before it is admitted
        self.inputs = InputCheck(self.spec.name, self.spec.interface.inputs)

    @property
    def executing(self) -> int:
        """Runs executing now (past admission, and not waiting in a host's own line)."""
        return min(self.running, self.spec.slots)

    def slot(self, *, bounded: bool = True) -> Slot:
        """Admit a run now, or refuse it at once: Unavailable (draining) or Busy (queue full);
        ``async with`` the returned :class:`Slot` waits for a slot and holds it while the run
        runs. ``bounded=False`` skips the queue bound: for runs accepted before a restart."""
        spec = self.spec
        if self.draining:
            raise Unavailable(f"PTS {spec.name} generation {self.number} is draining")
        if bounded and self.admitted >= self._limit:
            raise Busy(
                f"PTS {spec.name} is busy: {self.executing} running, "
                f"{self.admitted - self.executing} queued (limit {spec.queue})",
                retry_after=1,
            )
        self.admitted += 1
        return Slot(self)

    def _occupy_now(self) -> bool:
        """Take a slot for an admitted run if one is free and nobody waits (most runs): no
        wait, no future. False: the run waits in line (:meth:`_occupy`)."""
        if self._limited:        # no line of its host's own: slots are held here
            if self._free == 0 or self._waiters:
                return False
            self._free -= 1
        self.running += 1
        return True

    async def _occupy(self) -> None:
        """Wait for a slot for an admitted run; on failure (Unavailable: closed while it was
        queued, or cancelled) the admission is given back."""
        await self._queued()
        self.running += 1

    async def _queued(self) -> None:
        """Wait in line until a run that ends hands its slot over (or the generation closes)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.cancelled():
                if waiter in self._waiters:    # (close() empties the line itself)
                    self._waiters.remove(waiter)
            else:           # handed a slot in the same turn as the cancel: pass it on
                self._hand_over()
            self._leave()
            raise
        if self.refusal:      # closed while this run was queued: its slot is not used
            self._leave()
            raise Unavailable(self.refusal)

    def _hand_over(self) -> None:
        """A slot is free: to the first run in line, or back to the free ones."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1

    def _release(self) -> None:
        """A run that held a slot has ended."""
        self.running -= 1
        if self._limited:
            self._hand_over()
        self._leave()

    def _leave(self) -> None:
        self.admitted -= 1
        if self.admitted == 0 and self._drain is not None:
            if not self._drain.done():
                self._drain.set_result(None)
            self._drain = None

    async def wait_drained(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every admitted run to finish; False if some are left."""
        if self.admitted == 0:
            return True
        if self._drain is None:      # one future for every waiter of this drain
            self._drain = asyncio.get_running_loop().create_future()
        done, _pending = await asyncio.wait({self._drain}, timeout=timeout)
        return bool(done)

    def close(self, reason: str) -> None:
        """Admit nothing more and fail the queued runs with ``reason`` (running ones go on).

        Every queued run is woken to see the refusal and fail; a slot handed to one of them
        in the same turn is lost with it, which never matters: a closed generation admits
        nothing.
        """
        self.refusal = reason
        self.draining = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def public(self) -> dict[str, Any]:
        return {
            "generation": self.number, "version": self.spec.version, "mode": self.spec.mode.value,
            "running": self.executing, "queued": self.admitted - self.executing,
            "slots": self.spec.slots, "queue": self.spec.queue, **self.host.state().public(),
        }


class Slot:
    """One admitted run of a generation (from :meth:`Generation.slot`): ``async with`` it to
    wait for a slot and hold it while the run runs, or :meth:`withdraw` it if the run never
    starts. A class rather than a generator-based context manager: this runs for every run.
    """

    __slots__ = ("_generation", "_state")

    def __init__(self, generation: Generation) -> None:
        self._generation = generation
        self._state = "admitted"        # admitted -> holding -> ended

    async def __aenter__(self) -> None:
        if self._state != "admitted":
            raise RuntimeError("a slot is entered once")
        self._state = "ended"           # given back by _occupy if waiting fails
        if not self._generation._occupy_now():
            await self._generation._occupy()
        self._state = "holding"

    async def __aexit__(self, *exc: object) -> None:
        self._state = "ended"
        self._generation._release()

    def withdraw(self) -> None:
        """Give back an admission that never held a slot (its run did not start)."""
        if self._state == "admitted":
            self._state = "ended"
            self._generation._leave()


class Registry:
    """Name -> current generation. Safe to use from the daemon's event loop only."""

    def __init__(self, factory: HostFactory) -> None:
        self._factory = factory
        self._current: dict[str, Generation] = {}
        self._counter = 0
        self._retiring: dict[asyncio.Task[None], Generation] = {}
        self._canceller: Canceller | None = None

    def set_canceller(self, canceller: Canceller) -> None:
        """Who cancels the runs a retired generation still has after its drain time."""
        self._canceller = canceller

    def names(self) -> list[str]:
        return sorted(self._current)

    def get(self, name: str) -> Generation:
        try:
            return self._current[name]
        except KeyError:
            raise NotFound(f"no PTS named {name!r}", pts=name) from None

    def find(self, name: str) -> Generation | None:
        return self._current.get(name)

    def generations(self) -> Iterable[Generation]:
        return self._current.values()

    def retiring(self) -> list[Generation]:
        """Generations replaced or removed but not yet stopped."""
        return list(self._retiring.values())

    def remove(self, name: str) -> Generation:
        """Stop serving ``name``: new runs get not_found; the caller retires what is returned."""
        generation = self.get(name)
        del self._current[name]
        log.info("pts_removed", pts=name, generation=generation.number)
        return generation

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

    async def retire(self, generation: Generation, *, drain: float, reason: str) -> None:
        """Let a replaced generation finish what it admitted (up to ``drain`` s), then stop it.

        Runs left after the drain time are cancelled with ``reason`` ("replaced by version 2").
        """
        generation.draining = True
        if not await generation.wait_drained(drain):
            log.warning("drain_timeout", pts=generation.spec.name, generation=generation.number,
                        left=generation.admitted, reason=reason)
            generation.close(reason)
            if self._canceller is not None:
                await self._canceller(generation, reason)
            if not await generation.wait_drained(CANCEL_WAIT):
                log.warning("runs_abandoned", pts=generation.spec.name,
                            generation=generation.number, left=generation.admitted)
        await generation.host.stop(grace=2.0)
        log.info("generation_stopped", pts=generation.spec.name, generation=generation.number)

    def retire_later(self, generation: Generation, *, drain: float, reason: str) -> None:
        """:meth:`retire` in a background task the registry owns (awaited by :meth:`settled`)."""
        task = asyncio.get_running_loop().create_task(
            self.retire(generation, drain=drain, reason=reason),
            name=f"retire-{generation.spec.name}-{generation.number}")
        self._retiring[task] = generation
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    async def settled(self) -> None:
        """Wait until every retiring generation has stopped."""
        while self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    def switch(self, generation: Generation, *, drain: float) -> Generation | None:
        """Make a started generation current; the one it replaces drains in the background.

        The plain swap, without init, self-test, lock or audit (those are
        :class:`pnsd.deploy.Deployer`'s). Returns the replaced generation.
        """
        previous = self.install(generation)
        if previous is not None:
            version = generation.spec.version or f"generation {generation.number}"
            self.retire_later(previous, drain=drain, reason=f"replaced by version {version}")
        return previous

    async def stop_all(self, *, grace: float) -> None:
        await self.settled()
        generations = list(self._current.values())
        self._current.clear()
        for generation in generations:
            generation.draining = True
        await asyncio.gather(*(g.host.stop(grace=grace) for g in generations))
