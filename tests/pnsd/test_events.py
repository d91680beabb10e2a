"""A job's event log: numbering, resumption after a sequence number, bounded buffer, waking."""

from __future__ import annotations

import asyncio

import pytest

from pnsd.jobs.events import EventLog, summary
from pnsd.jobs.model import Job


def running_job() -> Job:
    job = Job.create("echo", 1.0)
    job.start(2.0)
    return job


def test_events_are_numbered_and_resumable_after_a_sequence_number() -> None:
    job = running_job()
    log = EventLog(job.id)
    log.status(job)
    job.report_progress(3.0, 50, "half")
    log.progress(job)
    log.log("a line")
    assert [e["seq"] for e in log.after(0)] == [1, 2, 3]
    assert [e["kind"] for e in log.after(1)] == ["progress", "log"]
    assert log.after(3) == []


def test_the_buffer_is_bounded_and_keeps_the_newest() -> None:
    log = EventLog("j", size=4)
    for i in range(10):
        log.log(f"line {i}")
    assert [e["seq"] for e in log.after(0)] == [7, 8, 9, 10]


async def test_a_follower_is_woken_by_new_events_and_ends_with_the_job() -> None:
    job = running_job()
    log = EventLog(job.id)
    seen: list[str] = []

    async def follow() -> None:
        async for event in log.follow(0, idle=10):
            seen.append(event["kind"])

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)        # let the follower start waiting
    log.log("working")
    job.succeed(4.0)
    log.status(job)
    await asyncio.wait_for(task, 5)
    assert seen == ["log", "status"]


async def test_an_idle_follower_times_out() -> None:
    log = EventLog("j")
    with pytest.raises(TimeoutError):
        async for _ in log.follow(0, idle=0.01):
            pass


def test_summary_describes_a_job_whose_events_are_gone() -> None:
    job = running_job()
    job.fail(5.0, "timeout", "too slow")
    event = summary(job, 42)
    assert (event["seq"], event["status"], event["reason"], event["final"]) == (
        42, "failed", "timeout", True)


def test_an_unwatched_log_keeps_only_the_latest_status_and_numbers_on() -> None:
    job = running_job()
    log = EventLog(job.id)
    log.status(job)                  # nobody watches: kept as the one latest status
    job.succeed(3.0)
    log.status(job)
    assert log.seq == 2 and log.closed
    [latest] = log.after(0)          # a late watcher gets the latest, with its number
    assert (latest["seq"], latest["status"], latest["progress"]) == (2, "successful", 100)
    assert latest == {"job": job.id, "seq": 2, "kind": "status", "status": "successful",
                      "progress": 100, "message": job.message, "reason": ""}
    assert type(latest["status"]) is str     # kept as a tuple, told as the buffered event is
    log.log("after the end")         # the buffer, once made, keeps everything as before
    assert [e["seq"] for e in log.after(0)] == [2, 3]


def test_a_progress_line_keeps_the_status_before_it() -> None:
    job = running_job()
    log = EventLog(job.id)
    log.status(job)
    job.report_progress(3.0, 10, "a tenth")
    log.progress(job)
    assert [(e["seq"], e["kind"]) for e in log.after(0)] == [(1, "status"), (2, "progress")]
    assert log.after(0)[0]["progress"] == 0     # the status as it was when it was told
