"""Jobs in motion: admit a run, execute it on its PTS, cancel it, find it.

Owns the live jobs (their tasks, cancel handles and event buffers). Synchronous runs are
answered from memory (inline ones within the request's call, worker ones from the worker's
reply); asynchronous submissions are admitted (or refused as busy at once), committed as
``accepted`` and acknowledged without waiting for a slot, then wait for one and run in
background tasks this scheduler owns and awaits on shutdown. A job belongs to its ``owner`` (a
web user; "" is the operator): a caller who names an owner finds only that owner's jobs, and
others' are "not found", as missing ones are. Recording and retiring finished runs is
:mod:`pnsd.jobs.finishing`'s. It never touches sockets; records go through the store, hosts through
the registry.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
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
from pnsd.jobs.finishing import Finisher, Outcome, failure_of, outcome
from pnsd.hosts.inproc import InprocHost
from pnsd.hosts.worker import WorkerHost
from pnsd.jobs.model import Job, Status, valid_job_id
from pnsd.later import Later
from pnsd.jobs.livejob import LiveJob, pack, unpack
from pnsd.registry import Generation, Registry
from pnsd.jobs.store import JobStore

log = structlog.get_logger(__name__)

DELETE_WAIT = 5.0    # seconds a delete waits for the job it cancelled to end

class Scheduler:
    def __init__(
        self, registry: Registry, store: JobStore, *, clock: Callable[[], float] = time.time,
        record_sync: bool = True,
    ) -> None:
        self.registry = registry
        self.store = store
        self.clock = clock
        self._live: dict[str, LiveJob] = {}
        self.finisher = Finisher(store, self._live, clock=clock, record_sync=record_sync)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.accepting = True
        registry.set_canceller(self.cancel_runs_on)

    @property
    def record_sync(self) -> bool:
        """Whether synchronous runs are recorded (the finisher's setting)."""
        return self.finisher.record_sync

    # -- starting work -------------------------------------------------------------------

    def _generation(self, pts: str) -> Generation:
        """The generation that takes new runs of ``pts``."""
        if not self.accepting:
            raise Unavailable("the daemon is shutting down", retry_after=5)
        return self.registry.get(pts)

    def _admit(self, generation: Generation, timeout: Any, *, sync: bool,
               owner: str = "") -> tuple[Job, float]:
        """A new job for ``generation`` and its time limit (the spec's, or a lower one asked)."""
        spec = generation.spec
        limit = spec.timeout
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
                raise BadRequest("timeout must be a positive number of seconds")
            limit = min(float(timeout), limit)
        job = Job.create(spec.name, self.clock(), sync=sync, version=spec.version, owner=owner)
        return job, limit

    def _live_job(self, job: Job, generation: Generation) -> LiveJob:
        return LiveJob.watched(job, generation, clock=self.clock)

    def run_now(self, pts: str, data: Any, *, timeout: Any = None,
                owner: str = "") -> Outcome | Later[Outcome] | Awaitable[Outcome]:
        """A synchronous run: finished within this call when it can be, else one to wait for.

        It can be when its PTS runs inline (quick, in the daemon, neither blocking nor
        awaiting), a slot is free now and the record needs no file written. Nothing else runs
        on the loop meanwhile, so nobody can see the slot taken, watch or cancel: the run skips
        the task, slot and copies the general path (:meth:`run`) needs, with the same outcome.
        A run on a worker host is answered by callback (:meth:`_start_on_worker`); any other
        is an awaitable of the general path.
        """
        generation = self._generation(pts)
        host = generation.host
        inline = isinstance(host, InprocHost) and host.inline and generation.free_now()
        if not (inline or isinstance(host, WorkerHost)):
            return self._run(generation, data, timeout, owner=owner)
        input_blob = pack(data) if self.record_sync else b""
        if not self.store.fits_inline(input_blob):   # its record needs a file written first
            return self._run(generation, data, timeout, input_blob=input_blob, owner=owner)
        if isinstance(host, WorkerHost):
            job, limit = self._admit(generation, timeout, sync=True, owner=owner)
            return self._start_on_worker(generation, host, data, (job, limit), input_blob)
        assert isinstance(host, InprocHost)
        job, _limit = self._admit(generation, timeout, sync=True, owner=owner)  # no timer
        if host.run_takes_ctx:    # its progress and log lines go to watchers of its events
            live = self._live_job(job, generation)
        else:                     # nothing to report between start and end: no event log
            live = LiveJob.quiet(job, generation)
        live.input_blob = input_blob
        job.start(self.clock())
        live.publish()
        try:
            live.result = host.run_now(data, ctx=live.ctx)
        except DaemonError as exc:
            live.error = exc
        return self.finisher.conclude(live, live.packed_result())

    def _start_on_worker(self, generation: Generation, host: WorkerHost, data: Any,
                         admitted: tuple[Job, float], input_blob: bytes) -> Later[Outcome]:
        """A synchronous run on a worker host, with no task: the host answers it by callback
        (:meth:`_worker_replied`), from the callback that receives the worker's reply."""
        job, limit = admitted
        generation.enter_now()
        live = self._live_job(job, generation)
        live.input_blob = input_blob
        self._live[job.id] = live
        job.start(self.clock())
        live.publish()
        later: Later[Outcome] = Later()
        context = contextvars.copy_context()   # its log lines keep the request's trace

        def reply(result: Any, error: DaemonError | None) -> None:
            context.run(self._worker_replied, live, later, result, error)

        try:
            run = host.start_run(data, timeout=limit, ctx=live.ctx, reply=reply)
        except DaemonError as exc:
            reply(None, exc)
        except BaseException:       # a bug: give the slot back, the server reports it
            generation.release()
            self._live.pop(job.id, None)
            raise
        else:
            live.abort = partial(host.cancel_run, run)
        return later

    def _worker_replied(self, live: LiveJob, later: Later[Outcome], result: Any,
                        error: DaemonError | None) -> None:
        """The outcome of a :meth:`_start_on_worker` run: record it, then answer its caller."""
        assert live.generation is not None
        live.generation.release()
        live.abort = None
        live.result, live.error = result, error
        try:
            outcome = self.finisher.conclude(live, live.packed_result())
        except Exception as exc:  # the run's error, raised for its caller (a bug: logged there)
            later.settle(None, exc)
            return
        if isinstance(outcome, tuple):
            later.settle(outcome)
        else:
            self._keep(self._settle_later(outcome, later), f"record-{live.job.id}")

    @staticmethod
    async def _settle_later(pending: Awaitable[Outcome], later: Later[Outcome]) -> None:
        try:
            outcome = await pending
        except Exception as exc:  # the run's own error, raised for its caller
            later.settle(None, exc)
        else:
            later.settle(outcome)

    async def run(self, pts: str, data: Any, *, timeout: Any = None,
                  owner: str = "") -> Outcome:
        """A synchronous run: the caller waits for the result; recorded with group commit."""
        return await self._run(self._generation(pts), data, timeout, owner=owner)

    async def _run(self, generation: Generation, data: Any, timeout: Any, *,
                   input_blob: bytes | None = None, owner: str = "") -> Outcome:
        job, limit = self._admit(generation, timeout, sync=True, owner=owner)
        live = self._live_job(job, generation)
        async with generation.slot():
            live.task = asyncio.current_task()
            self._live[live.job.id] = live
            if self.record_sync:     # recorded once, finished (Finisher.finish)
                live.input_blob = pack(data) if input_blob is None else input_blob
            try:
                await self._execute(generation, live, data, limit)
            finally:
                result = self.finisher.retire(live)
        return outcome(live, result)

    async def submit(self, pts: str, data: Any, *, timeout: Any = None, owner: str = "",
                     key: str | None = None) -> Job:
        """An asynchronous run: admitted (or refused as Busy at once, recording nothing),
        committed durably as accepted and acknowledged with its record; it waits for a slot
        afterwards, in a background task. A ``key`` its owner used before returns the job it
        made (whatever its state) and runs nothing."""
        generation = self._generation(pts)
        job, limit = self._admit(generation, timeout, sync=False, owner=owner)
        job.idempotency_key = key
        try:
            generation.admit()
        except Busy:
            repeated = None if key is None else await self.store.keyed(owner, key)
            if repeated is None:
                raise
            return self._repeat(repeated, pts)
        try:
            repeated = await self.store.add(job, pack(data), durable=True)
        except BaseException:
            generation.withdraw()
            raise
        if repeated is not None:
            generation.withdraw()
            return self._repeat(repeated, pts)
        self._start(generation, self._live_job(job, generation), data, limit)
        return job

    def _repeat(self, job: Job, pts: str) -> Job:
        """The job an idempotency key made before (as it stands now)."""
        if job.pts != pts:
            raise Conflict(f"this idempotency key made job {job.id} of PTS {job.pts}, "
                           f"not of {pts}", job=job.id, pts=job.pts)
        live = self._live.get(job.id) or self.finisher.finished.get(job.id)
        return live.job if live is not None else job

    async def resume(self, job: Job) -> None:
        """Run a job that recovery left accepted (never started, or its PTS is idempotent)."""
        try:
            generation = self.registry.get(job.pts)
            data = unpack(await self.store.input(job.id))
            generation.admit(bounded=False)     # it was accepted before: no busy now
        except DaemonError as exc:
            job.fail(self.clock(), exc.code, f"could not be requeued: {exc.message}")
            await self.store.finish(job, None, durable=True)
            return
        self._start(generation, self._live_job(job, generation), data, generation.spec.timeout)
        log.info("job_requeued", job=job.id, pts=job.pts)

    def _start(self, generation: Generation, live: LiveJob, data: Any, limit: float) -> None:
        """Wait for a slot and run an admitted, recorded job in a task this scheduler owns."""
        self._live[live.job.id] = live
        live.task = self._keep(self._background(generation, live, data, limit),
                               f"job-{live.job.id}")

    def _keep(self, work: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``work`` in a task this scheduler owns and waits for on shutdown."""
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _background(
        self, generation: Generation, live: LiveJob, data: Any, limit: float
    ) -> None:
        if live.job.is_finished:        # dismissed before this task began
            generation.withdraw()
            self._live.pop(live.job.id, None)
            return
        live.waiting = True
        try:
            await generation.occupy()
        except Unavailable as exc:      # its generation closed while it was queued
            live.error = exc
        except asyncio.CancelledError:  # dismissed while queued, or the daemon stops: its
            self._live.pop(live.job.id, None)   # record says so, or keeps it accepted
            raise
        finally:
            live.waiting = False
        if live.error is not None:
            await self.finisher.finish(live, None)
            self.finisher.retire(live)
            return
        try:
            if self.accepting:   # else the daemon stops: it stays accepted, runs after restart
                await self._execute(generation, live, data, limit)
        finally:
            generation.release()
            if live.job.status is Status.ACCEPTED:
                self._live.pop(live.job.id, None)
            else:
                self.finisher.retire(live)

    async def _execute(
        self, generation: Generation, live: LiveJob, data: Any, limit: float
    ) -> None:
        job = live.job
        if job.is_finished:  # dismissed while queued
            return
        job.start(self.clock())
        live.publish()
        try:
            try:
                if not job.sync:
                    # Committed before the run starts: a job the store calls accepted never
                    # ran, so recovery may run it after a crash without running it twice.
                    await self.store.update(job, durable=True)
                live.result = await generation.host.run(data, timeout=limit, ctx=live.ctx)
            except asyncio.CancelledError:
                if not self._absorb_cancel(live):
                    await self.finisher.abandon(live)
                    raise
                raise Cancelled(live.cancel_reason) from None
        except DaemonError as exc:
            live.error = exc
        await self.finisher.finish(live, live.packed_result())

    @staticmethod
    def _absorb_cancel(live: LiveJob) -> bool:
        """True when the cancellation was our own job.cancel (and only that): absorb it."""
        task = asyncio.current_task()
        if not live.cancel_requested or task is None:
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
        """The job's result; TooLarge (before reading it) if stored larger than ``max_bytes``."""
        job = await self._successful(job_id, owner)
        live = self._find(job_id)
        if live is not None and live.error is None and live.result_kept:
            return job, live.result
        if max_bytes is not None and job.result_size > max_bytes:
            raise TooLarge(f"the result of job {job.id} is {job.result_size} bytes, over the "
                           f"message limit: read it in chunks (job.result_chunk)",
                           job=job.id, size=job.result_size)
        blob = await self.store.result(job_id)
        return job, None if blob is None else unpack(blob)

    async def result_chunk(self, job_id: Any, offset: int, limit: int, *,
                           owner: str | None = None) -> tuple[Job, int, bytes]:
        """A slice of the job's result in its stored (msgpack) form, and the form's size."""
        job = await self._successful(job_id, owner)
        live = self._find(job_id)
        if live is not None and live.error is None and live.result_kept:
            blob = pack(live.result)       # kept in memory: small
            return job, len(blob), blob[offset:offset + limit]
        size, data = await self.store.result_chunk(job.id, offset, limit)
        return job, size, data

    async def _successful(self, job_id: Any, owner: str | None) -> Job:
        job = await self.status(job_id, owner=owner)
        if not job.is_finished:
            raise NotReady(f"job {job_id} is {job.status.value}: no result yet",
                           job=job_id, status=job.status.value)
        if job.status is not Status.SUCCESSFUL:
            raise failure_of(job)
        return job

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
        self.finisher.forget(job.id)
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
        victims = [live for live in self._live.values()
                   if live.generation is generation and not live.job.is_finished]
        for live in victims:
            await self._cancel_live(live, reason, reason)
        if victims:
            log.warning("runs_cancelled", pts=generation.spec.name,
                        generation=generation.number, count=len(victims), reason=reason)

    async def _cancel_live(self, live: LiveJob, queued_reason: str, running_reason: str) -> None:
        job = live.job
        if job.status is Status.ACCEPTED:
            if live.waiting and live.task is not None:
                live.task.cancel()      # it leaves the queue now
            job.dismiss(self.clock(), queued_reason)
            live.publish()
            await self.store.finish(job, None, durable=True)
        elif not live.cancel_requested and not live.finishing:
            live.cancel_requested = True
            live.cancel_reason = running_reason
            live.ctx.cancel()
            if live.task is not None:
                live.task.cancel()
            elif live.abort is not None:     # answered at once, as Cancelled: dismissed
                live.abort(running_reason)

    def events_of(self, job_id: str) -> EventLog | None:
        live = self._find(job_id)
        return live.events if live is not None else None

    def _find(self, job_id: Any) -> LiveJob | None:
        if not valid_job_id(job_id):
            raise BadRequest(f"{job_id!r} is not a job id", job=str(job_id)[:64])
        return self._live.get(job_id) or self.finisher.finished.get(job_id)

    async def shutdown(self, *, grace: float) -> None:
        """Refuse new work, give running jobs ``grace`` seconds, then cancel the rest. Jobs
        waiting for a slot stay accepted in the store: recovery runs them at the next start."""
        self.accepting = False
        for live in list(self._live.values()):
            if live.waiting and live.task is not None:
                live.task.cancel()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


__all__ = ["NotFound", "Scheduler"]
