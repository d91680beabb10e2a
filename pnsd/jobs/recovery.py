"""Crash recovery of unfinished jobs: a node's own after it restarts, and, on a shared store,
the jobs of a node that died, taken over by a survivor.

Owns the decision for each unfinished job (run it again, or fail it with the reason) and the
SQL that takes a dead node's jobs over. It reaches the database only through
:meth:`pnsd.jobs.store.JobStore.run_sql`; it must not run jobs (its callers resume the jobs it
hands back) and must not decide when a node is dead (:mod:`pnsd.jobs.leases` does).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection
from functools import partial
from typing import TYPE_CHECKING

import structlog

from pnsd.jobs import jobsql
from pnsd.jobs.model import RESTART_REASON, Job, Status

if TYPE_CHECKING:
    from pnsd.jobs.store import JobStore

log = structlog.get_logger(__name__)

NODE_LOST = "node lost"   # the failure reason of a job whose node died under it
# the database's clock: every node compares leases on one clock, whatever its own says
DB_NOW = "extract(epoch from clock_timestamp())"
Settled = tuple[list[Job], list[Job]]   # (failed, requeued), each oldest first


def settle(jobs: list[Job], now: float, *, requeue: Callable[[str], bool], reason: str,
           why: Callable[[Job], str]) -> Settled:
    """Accepted jobs (never started) stay accepted, to be run; running ones go back to
    accepted where ``requeue(pts)`` (an idempotent PTS), else fail with ``reason``."""
    failed: list[Job] = []
    requeued: list[Job] = []
    for job in jobs:
        if job.status is Status.ACCEPTED or requeue(job.pts):
            job.requeue(now)
            requeued.append(job)
        else:
            job.fail(now, reason, why(job))
            failed.append(job)
    return failed, requeued


async def recover(store: JobStore, now: float, *, requeue: Callable[[str], bool]) -> Settled:
    """After a restart: this node's unfinished jobs (all of them on an embedded store)."""
    mine, params = ("AND node = ? ", [store.node]) if store.shared else ("", [])
    sql = (f"SELECT {jobsql.JOB_COLUMNS} FROM jobs WHERE NOT {jobsql.FINISHED_SQL} "
           f"{mine}ORDER BY created")
    jobs = await store.run_sql(partial(jobsql.select_jobs, sql, params), write=False,
                               what="read unfinished jobs")
    failed, requeued = settle(
        jobs, now, requeue=requeue, reason=RESTART_REASON,
        why=lambda job: f"the daemon restarted while the job was {job.status.value}")
    if jobs:
        for job in jobs:
            job.node = store.node
        rows = [job.to_row() for job in jobs]
        await store.run_sql(partial(jobsql.update_all, rows), write=True,
                            what="recover unfinished jobs")
    log.info("store_recovered", failed=len(failed), requeued=len(requeued))
    return failed, requeued


def reap(node: str, now: float, served: Collection[str], idempotent: Collection[str],
         conn: sqlite3.Connection) -> Settled:
    """Take over the unfinished jobs of every node whose lease expired, in one transaction
    (rows locked: two survivors never take the same job). Running jobs of a PTS that is not
    idempotent fail with the reason; accepted ones, and running ones of an idempotent PTS,
    come to ``node`` if it serves their PTS (else they wait for a node that does). A dead
    node's lease row goes once none of its jobs is left."""
    dead = conn.execute(f"SELECT name FROM nodes WHERE expires < {DB_NOW} AND name <> ? "
                        "FOR UPDATE SKIP LOCKED", (node,)).fetchall()
    failed: list[Job] = []
    requeued: list[Job] = []
    for (name,) in dead:
        sql = (f"SELECT {jobsql.JOB_COLUMNS} FROM jobs WHERE node = ? AND NOT "
               f"{jobsql.FINISHED_SQL} ORDER BY created FOR UPDATE")
        jobs = jobsql.select_jobs(sql, [name], conn)
        taken = [job for job in jobs if job.pts in served or (
            job.status is Status.RUNNING and job.pts not in idempotent)]
        lost, again = settle(
            taken, now, requeue=idempotent.__contains__, reason=NODE_LOST,
            why=partial(_lost_on, name))
        rows = []
        for job in taken:
            job.node = node
            rows.append({**job.to_row(), "dead": name})
        conn.executemany(f"UPDATE jobs SET {jobsql.STATE_SQL}, node = :node "
                         "WHERE id = :id AND node = :dead", rows)
        if len(taken) == len(jobs):
            conn.execute("DELETE FROM nodes WHERE name = ?", (name,))
        log.warning("node_reaped", dead=name, by=node, failed=len(lost), requeued=len(again),
                    left=len(jobs) - len(taken))
        failed += lost
        requeued += again
    return failed, requeued


def _lost_on(name: str, job: Job) -> str:
    return f"node {name} stopped renewing its lease while the job was {job.status.value}"
