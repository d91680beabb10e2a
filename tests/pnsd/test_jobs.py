"""The job state machine: allowed moves, refused moves, progress and timestamps."""

from __future__ import annotations

import pytest

from pnsd.errors import Conflict
from pnsd.jobs.model import FINISHED, Job, Status, new_job_id, valid_job_id


def make_job(status: Status = Status.ACCEPTED) -> Job:
    job = Job.create("echo", 100.0, version="1")
    if status in (Status.RUNNING, *FINISHED):
        job.start(101.0)
    if status in FINISHED:
        move(job, status, 102.0)
    assert job.status is status
    return job


def move(job: Job, to: Status, now: float) -> None:
    if to is Status.RUNNING:
        job.start(now)
    elif to is Status.SUCCESSFUL:
        job.succeed(now)
    elif to is Status.FAILED:
        job.fail(now, "timeout", "took too long")
    elif to is Status.DISMISSED:
        job.dismiss(now, "cancelled by user")
    else:
        raise AssertionError(to)


ALLOWED = [
    (Status.ACCEPTED, Status.RUNNING),
    (Status.ACCEPTED, Status.DISMISSED),
    (Status.ACCEPTED, Status.FAILED),
    (Status.RUNNING, Status.SUCCESSFUL),
    (Status.RUNNING, Status.FAILED),
    (Status.RUNNING, Status.DISMISSED),
]
FORBIDDEN = [
    (Status.ACCEPTED, Status.SUCCESSFUL),
    (Status.RUNNING, Status.RUNNING),
    *[(done, to) for done in FINISHED for to in Status if to is not Status.ACCEPTED],
]


@pytest.mark.parametrize(("start", "to"), ALLOWED)
def test_allowed_transitions_change_status_and_updated(start: Status, to: Status) -> None:
    job = make_job(start)
    move(job, to, 200.0)
    assert job.status is to
    assert job.updated == 200.0


@pytest.mark.parametrize(("start", "to"), FORBIDDEN)
def test_forbidden_transitions_raise_conflict_naming_both_states(
    start: Status, to: Status
) -> None:
    job = make_job(start)
    before = job.public()
    with pytest.raises(Conflict) as caught:
        move(job, to, 200.0)
    assert start.value in caught.value.message
    assert to.value in caught.value.message
    assert job.public() == before


def test_new_job_is_accepted_with_creation_times() -> None:
    job = Job.create("echo", 100.0, sync=True, version="2")
    assert job.status is Status.ACCEPTED
    assert (job.created, job.updated, job.started, job.finished) == (100.0, 100.0, None, None)
    assert job.sync and job.version == "2"
    assert valid_job_id(job.id)


def test_timestamps_follow_the_run() -> None:
    job = Job.create("echo", 100.0)
    job.start(101.0)
    assert (job.started, job.finished, job.updated) == (101.0, None, 101.0)
    job.succeed(105.0)
    assert (job.started, job.finished, job.updated) == (101.0, 105.0, 105.0)
    assert job.progress == 100


def test_fail_records_reason_and_message() -> None:
    job = make_job(Status.RUNNING)
    job.fail(110.0, "worker died", "exit code -9")
    assert (job.status, job.reason, job.message, job.finished) == (
        Status.FAILED, "worker died", "exit code -9", 110.0
    )


def test_dismissing_an_accepted_job_finishes_it() -> None:
    job = make_job(Status.ACCEPTED)
    job.dismiss(103.0, "cancelled")
    assert job.status is Status.DISMISSED
    assert job.finished == 103.0
    assert job.message == "cancelled"


@pytest.mark.parametrize(
    ("percent", "expected"), [(-5, 0), (0, 0), (42, 42), (100, 100), (250, 100)]
)
def test_progress_is_clamped_to_0_100(percent: int, expected: int) -> None:
    job = make_job(Status.RUNNING)
    job.report_progress(120.0, percent, "working")
    assert job.progress == expected
    assert job.message == "working"
    assert job.updated == 120.0


def test_progress_without_message_keeps_the_old_one() -> None:
    job = make_job(Status.RUNNING)
    job.report_progress(120.0, 10, "step 1")
    job.report_progress(121.0, 20)
    assert (job.progress, job.message) == (20, "step 1")


@pytest.mark.parametrize("status", [Status.ACCEPTED, *FINISHED])
def test_progress_only_while_running(status: Status) -> None:
    job = make_job(status)
    with pytest.raises(Conflict):
        job.report_progress(120.0, 50)


def test_requeue_resets_an_interrupted_run() -> None:
    job = make_job(Status.RUNNING)
    job.report_progress(103.0, 40)
    job.requeue(200.0)
    assert job.status is Status.ACCEPTED
    assert (job.started, job.progress, job.updated) == (None, 0, 200.0)
    job.start(201.0)
    assert job.public()["status"] == "running"


@pytest.mark.parametrize("status", sorted(FINISHED))
def test_finished_job_cannot_be_requeued(status: Status) -> None:
    with pytest.raises(Conflict):
        make_job(status).requeue(200.0)


def test_public_is_plain_data() -> None:
    job = make_job(Status.SUCCESSFUL)
    public = job.public()
    assert public["status"] == "successful"
    assert type(public["status"]) is str
    assert set(public) == {
        "id", "pts", "status", "created", "started", "finished", "updated", "progress",
        "message", "reason", "sync", "version", "owner", "node",
    }


def test_row_round_trip_keeps_every_field() -> None:
    job = make_job(Status.FAILED)
    job.input_size, job.result_size, job.sync = 12, 34, True
    assert Job.from_row(job.to_row()) == job


def test_job_ids_are_32_lowercase_hex() -> None:
    assert valid_job_id(new_job_id())
    assert new_job_id() != new_job_id()
    for bad in ["", "A" * 32, "a" * 31, "a" * 33, "g" * 32, "a" * 31 + "\n", None, 5]:
        assert not valid_job_id(bad)
