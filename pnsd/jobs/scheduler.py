"""Jobs in motion: admit a run, execute it on its PTS, cancel it, find it.

Owns the live jobs (:class:`pnsd.jobs.livejob.LiveJobs`, held here alone) and every run's one
shape: admitted to its PTS's current generation (or refused as busy at once), a slot held with
``async with``, ``await host.run(...)``, then finished (:mod:`pnsd.jobs.finishing`) and
retired. A synchronous run does this in its caller's task; an asynchronous submission is
committed as ``accepted`` and acknowledged without waiting for a slot, then waits for one and
runs in a background task this scheduler owns and awaits on shutdown. A job belongs to its
``owner`` (a web user; "" is the operator): a caller who names an owner finds only that owner's
jobs, and others' are "not found", as missing ones are. A run's input is checked against its
PTS's declared inputs (the generation's :class:`pnsd.validation.InputCheck`) before it is
admitted: a refused one is BadRequest and nothing is recorded. It never touches sockets; records go
through the store, hosts through the registry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from pnsd.errors import (
    BadRequest,
    Busy,
    Cancelled,
    Conflict,
    DaemonError,
    NotFound,
    NotReady,
    TooLarge,
    Unavailable,
)
from pnsd.jobs.events import EventLog
from pnsd.jobs.finishing import Finisher, failure_of
from pnsd.jobs.livejob import LiveJob, LiveJobs, Phase, pack, unpack
from pnsd.jobs.model import Job, Status, valid_job_id
from pnsd.jobs.store import JobStore
from pnsd.registry import Generation, Registry, Slot

log = structlog.get_logger(__name__)

DELETE_WAIT = 5.0    # seconds a delete waits for the job it cancelled to end

Outcome = tuple[Job, Any]   # a finished synchronous run: its job and result


class Scheduler:
    def __init__(
        self, registry: Registry, store: JobStore, *, clock: Callable[[], float] = time.time,
        record_sync: bool = True,
    ) -> None:
        self.registry = registry
        self.store = store
        self.clock = clock
        self.record_sync = record_sync
        self.jobs = LiveJobs()
        self.finisher = Finisher(store, clock=clock, record_sync=record_sync)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.accepting = True
        registry.set_canceller(self.cancel_runs_on)
        store.set_forgetter(self.jobs.forget_all)

    # -- starting work -------------------------------------------------------------------

    def _generation(self, pts: str) -> Generation:
        """The generation that takes new runs of ``pts``."""
        if not self.accepting:
            raise Unavailable("the daemon is shutting down", retry_after=5)
        return self.registry.get(pts)

    async def _checked(self, pts: str, data: Any, generation: Generation) -> Generation:
        """The generation that takes a run of ``pts`` with an input too large to check on the
        loop, once it passed its checks in a thread (BadRequest if not), and again if a new
        generation came meanwhile with another interface. A small input is checked at once
        by its caller (``inputs.quick``), without this coroutine."""
        await asyncio.to_thread(generation.inputs.check, data)
        current = self._generation(pts)
        if current.spec.interface != generation.spec.interface:
            await asyncio.to_thread(current.inputs.check, data)
        return current

    def _new_job(self, generation: Generation, timeout: Any, *, sync: bool,
                 owner: str) -> tuple[Job, float]:
        """A new job for ``generation`` and its time limit (the spec's, or a lower one asked)."""
        spec = generation.spec
        limit = spec.timeout
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
                raise BadRequest("timeout must be a positive number of seconds")
            limit = min(float(timeout), limit)
        job = Job.create(spec.name, self.clock(), sync=sync, version=spec.version, owner=owner)
        return job, limit

    async def run(self, pts: str, data: Any, *, timeout: Any = None,
                  owner: str = "") -> Outcome:
        """A synchronous run, in the caller's task: the caller waits for the result (or the
        run's error, raised); recorded with group commit."""
        generation = self._generation(pts)
        if not generation.inputs.quick(data):
            generation = await self._checked(pts, data, generation)
        job, limit = self._new_job(generation, timeout, sync=True, owner=owner)
        live = LiveJob.of(job, generation, clock=self.clock)
        if self.record_sync:     # recorded once, finished
            live.input_blob = pack(data)
        async with generation.slot():
            live.task = asyncio.current_task()
            self.jobs.add(live)
            try:
                await self._execute(live, data, limit)
            finally:
                result = self.jobs.retire(live)
        if live.error is not None:
            raise live.error
        return live.job, result

    async def submit(self, pts: str, data: Any, *, timeout: Any = None, owner: str = "",
                     key: str | None = None) -> Job:
        """An asynchronous run: admitted (or refused as Busy at once, recording nothing),
        committed durably as accepted and acknowledged with its record; it waits for a slot
        afterwards, in a background task. A ``key`` its owner used before returns the job it
        made (whatever its state) and runs nothing."""
        generation = self._generation(pts)
        if not generation.inputs.quick(data):
            generation = await self._checked(pts, data, generation)
        job, limit = self._new_job(generation, timeout, sync=False, owner=owner)
        job.idempotency_key = key
        try:
            slot = generation.slot()
        except Busy:
            repeated = None if key is None else await self.store.keyed(owner, key)
            if repeated is None:
                raise
            return self._repeat(repeated, pts)
        try:
            repeated = await self.store.add(job, pack(data), durable=True)
        except BaseException:
            slot.withdraw()
            raise
        if repeated is not None:
            slot.withdraw()
            return self._repeat(repeated, pts)
        self._start(LiveJob.of(job, generation, clock=self.clock), slot, data, limit)
        return job

    def _repeat(self, job: Job, pts: str) -> Job:
        """The job an idempotency key made before (as it stands now)."""
        if job.pts != pts:
            raise Conflict(f"this idempotency key made job {job.id} of PTS {job.pts}, "
                           f"not of {pts}", job=job.id, pts=job.pts)
        live = self.jobs.find(job.id)
        return live.job if live is not None else job

    async def resume(self, job: Job) -> None:
        """Run a job that recovery left accepted (never started, or its PTS is idempotent)."""
        try:
            generation = self.registry.get(job.pts)
            data = unpack(await self.store.input(job.id))
            slot = generation.slot(bounded=False)     # it was accepted before: no busy now
        except DaemonError as exc:
            job.fail(self.clock(), exc.code, f"could not be requeued: {exc.message}")
            await self.store.finish(job, None, durable=True)
            return
        live = LiveJob.of(job, generation, clock=self.clock)
        self._start(live, slot, data, generation.spec.timeout)
        log.info("job_requeued", job=job.id, pts=job.pts)

    def _start(self, live: LiveJob, slot: Slot, data: Any, limit: float) -> None:
        """Wait for a slot and run an admitted, recorded job in a task this scheduler owns."""
        self.jobs.add(live)
        live.task = self._keep(self._background(live, slot, data, limit), f"job-{live.job.id}")

    def _keep(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``work`` in a task this scheduler owns and waits for on shutdown."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _background(self, live: LiveJob, slot: Slot, data: Any, limit: float) -> None:
        """An accepted job: wait for a slot, then run it. Dismissed while it waits, or the
        daemon stopping, its task is cancelled (its record says so, or keeps it accepted)."""
        if live.phase is not Phase.NEW:     # dismissed before this task began
            slot.withdraw()
            self.jobs.drop(live)
            return
        live.phase = Phase.QUEUED
        try:
            async with slot:           # Unavailable: its generation closed while it waited
                if self.accepting:     # else the daemon stops: it runs after the restart
                    await self._execute(live, data, limit)
        except Unavailable as exc:     # (the run's own errors are its outcome, never raised)
            live.error = exc
            await self.finisher.finish(live)
        finally:
            if live.job.status is Status.ACCEPTED:
                self.jobs.drop(live)
            else:
                self.jobs.retire(live)

    async def _execute(self, live: LiveJob, data: Any, limit: float) -> None:
        """Run an admitted job holding its slot, and finish it; only a cancellation that is
        not the job's own (the daemon stopping) is raised."""
        job = live.job
        if live.phase not in (Phase.NEW, Phase.QUEUED):  # dismissed while queued
            return
        live.phase = Phase.RUNNING
        try:
            try:
                now = self.clock()
                if not job.sync:
                    # Committed before the run starts (and before anyone is told): a job the
                    # store calls accepted never ran, so recovery may run it after a crash
                    # without running it twice.
                    started = job.copy()
                    started.start(now)
                    await self.store.update(started, durable=True)
                job.start(now)
                live.publish()
                live.result = await live.generation.host.run(data, timeout=limit, ctx=live.ctx)
            except asyncio.CancelledError:
                if not self._absorb_cancel(live):
                    await self.finisher.abandon(live)
                    raise
                raise Cancelled(live.cancel_reason) from None
        except DaemonError as exc:
            live.error = exc
        await self.finisher.finish(live)

    @staticmethod
    def _absorb_cancel(live: LiveJob) -> bool:
        """True when the cancellation was our own job.cancel (and only that): absorb it."""
        task = asyncio.current_task()
        if live.phase is not Phase.STOPPING or task is None:
            return False
        return task.uncancel() == 0

    # -- looking at work -----------------------------------------------------------------

    async def status(self, job_id: Any, *, owner: str | None = None) -> Job:
        """The job, if ``owner`` may see it (None: anybody's); else NotFound, as if missing."""
        live = self._find(job_id)
        job = live.job if live is not None else await self.store.get(job_id)
        if not job.visible_to(owner):
            raise NotFound(f"no job {job_id}", job=job_id)
        return job

    async def result(self, job_id: Any, *, owner: str | None = None,
                     max_bytes: int | None = None) -> tuple[Job, Any]:
        """The job's result; TooLarge (before reading it) if stored larger than ``max_bytes``.
        A job no longer in memory is read with its result in one query."""
        live = self._find(job_id)
        job, blob = ((live.job, None) if live is not None
                     else await self.store.outcome(job_id, max_bytes))
        if not job.visible_to(owner):
            raise NotFound(f"no job {job_id}", job=job_id)
        self._check_successful(job)
        if live is not None and live.error is None and live.result_kept:
            return job, live.result
        if max_bytes is not None and job.result_size > max_bytes:
            raise TooLarge(f"the result of job {job.id} is {job.result_size} bytes, over the "
                           f"message limit: read it in chunks (job.result_chunk)",
                           job=job.id, size=job.result_size)
        if live is not None:     # in memory without its result
            blob = await self.store.result(job_id)
        return job, None if blob is None else unpack(blob)

    async def result_chunk(self, job_id: Any, offset: int, limit: int, *,
                           owner: str | None = None) -> tuple[Job, int, bytes]:
        """A slice of the job's result in its stored (msgpack) form, and the form's size."""
        job = await self._successful(job_id, owner)
        live = self._find(job_id)
        if live is not None and live.error is None and live.result_kept:
            blob = bytes(pack(live.result))       # kept in memory: small
            return job, len(blob), blob[offset:offset + limit]
        size, data = await self.store.result_chunk(job.id, offset, limit)
        return job, size, data

    async def _successful(self, job_id: Any, owner: str | None) -> Job:
        job = await self.status(job_id, owner=owner)
        self._check_successful(job)
        return job

    @staticmethod
    def _check_successful(job: Job) -> None:
        if not job.is_finished:
            raise NotReady(f"job {job.id} is {job.status.value}: no result yet",
                           job=job.id, status=job.status.value)
        if job.status is not Status.SUCCESSFUL:
            raise failure_of(job)

    def events_of(self, job_id: str) -> EventLog | None:
        live = self._find(job_id)
        return live.events if live is not None else None

    def _find(self, job_id: Any) -> LiveJob | None:
        if not valid_job_id(job_id):
            raise BadRequest(f"{job_id!r} is not a job id", job=str(job_id)[:64])
        return self.jobs.find(job_id)

    # -- stopping work -------------------------------------------------------------------

    async def cancel(self, job_id: Any, *, owner: str | None = None) -> Job:
        job = await self.status(job_id, owner=owner)
        live = self._find(job_id)
        if live is None or live.job.is_finished:
            return job
        await self._cancel_live(live, "dismissed before it started", "cancelled on request")
        return live.job

    async def delete(self, job_id: Any, *, owner: str | None = None) -> Job:
        """Delete a job: an unfinished one is cancelled first (and waited for, up to
        DELETE_WAIT s), then its record, files and every copy in memory go. Its last state."""
        job = await self.status(job_id, owner=owner)
        live = self._find(job_id)
        if live is not None and not live.job.is_finished:
            await self._cancel_live(live, "deleted before it started", "deleted on request")
            await self._ended(live)
        self.jobs.forget(job.id)
        try:
            await self.store.delete(job.id)
        except NotFound:
            if live is None:    # a run that was never recorded was known only in memory
                raise
        return job

    async def _ended(self, live: LiveJob) -> None:
        """Wait for a cancelled run to end; Conflict if it is still stopping."""
        task = live.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            await asyncio.wait({task}, timeout=DELETE_WAIT)
        if not live.job.is_finished:
            raise Conflict(f"job {live.job.id} is still stopping: delete it again shortly",
                           job=live.job.id, status=live.job.status.value)

    async def cancel_runs_on(self, generation: Generation, reason: str) -> None:
        """Cancel every unfinished run admitted to ``generation`` (retired, past its drain)."""
        victims = [live for live in self.jobs.running()
                   if live.generation is generation and not live.job.is_finished]
        for live in victims:
            await self._cancel_live(live, reason, reason)
        if victims:
            log.warning("runs_cancelled", pts=generation.spec.name,
                        generation=generation.number, count=len(victims), reason=reason)

    async def _cancel_live(self, live: LiveJob, queued_reason: str, running_reason: str) -> None:
        """A queued job is dismissed (and leaves the queue now); a running one is stopped,
        and its run answers Cancelled. One being recorded is past cancelling."""
        if live.phase in (Phase.RECORDING, Phase.DONE):
            return
        if live.phase not in (Phase.NEW, Phase.QUEUED):
            live.stop(running_reason)
            return
        if live.phase is Phase.QUEUED and live.task is not None:
            live.task.cancel()
        live.error = Cancelled(queued_reason)
        await self.finisher.finish(live)
        self.jobs.retire(live)

    async def shutdown(self, *, grace: float) -> None:
        """Refuse new work, give running jobs ``grace`` seconds, then cancel the rest. Jobs
        waiting for a slot stay accepted in the store: recovery runs them at the next start."""
        self.accepting = False
        for live in self.jobs.running():
            if live.phase is Phase.QUEUED and live.task is not None:
                live.task.cancel()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


__all__ = ["NotFound", "Outcome", "Scheduler"]
