"""Failures the model-based test (test_model.py) found, each kept as a plain sequence of calls.

Each test names the step sequence that failed and states the promise it broke (a defect of
issue 13, fixed since: each of these failed before its fix).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration import model_checks as checks
from tests.integration.model_driver import Driver, Reply
from tests.integration.model_pts import NAMES, spec, web_inputs, write_code
from tests.integration.model_state import JobModel

pytestmark = pytest.mark.slow


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Driver]:
    driver = Driver(tmp_path, call_timeout=5)
    driver.start()
    try:
        yield driver
    finally:
        left = driver.stop()
    assert not left, f"processes left after stop: {left}"


def deploy(driver: Driver, mode: str, version: int = 1) -> str:
    name = NAMES[mode]
    write_code(driver.code_dir, mode, version)
    reply = driver.http("POST", "/v1/processes", user="alice",
                        body={"name": name, "spec": spec(mode, version, driver.code_dir)})
    assert reply.status == 201, reply
    return name


def execute(driver: Driver, name: str, mode: str, data: object, *, user: str = "bob",
            headers: dict[str, str] | None = None) -> Reply:
    return driver.http("POST", f"/v1/processes/{name}/execution", user=user,
                       body={"inputs": web_inputs(mode, data, 0)}, headers=headers)


def finished_job(driver: Driver, name: str, owner: str) -> str:
    reply = execute(driver, name, "inproc", {"n": 1}, user=owner)
    assert reply.status == 200, reply
    match = checks.MONITOR.search(reply.headers.get("Link", ""))
    assert match is not None, reply.headers
    return match.group(1)


# deploy_first(worker); deploy(inproc); kill_and_restart_daemon(); run_sized_input x3;
# replace(web); submit(keyed=True, sleep=1.5)
def test_a_repeated_async_submission_with_one_idempotency_key_is_one_job(node: Driver) -> None:
    name = deploy(node, "worker")
    headers = {"Prefer": "respond-async", "Idempotency-Key": "k-0001"}
    first = execute(node, name, "worker", {"n": 25, "sleep": 1.5}, headers=headers)
    again = execute(node, name, "worker", {"n": 25, "sleep": 1.5}, headers=headers)
    assert (first.status, again.status) == (201, 201), (first, again)
    assert again.json()["jobID"] == first.json()["jobID"]


# deploy_first(process); deploy(inproc); kill_and_restart_daemon(); deploy(worker);
# run_sized_input(worker, under); run_sized_input(process, pad='double')
def test_an_input_twice_the_message_limit_goes_in_parts_and_runs(node: Driver) -> None:
    """Refused at once with 413 before issue 16; now uploaded in parts, run and recorded."""
    name = deploy(node, "process")
    before = checks.job_count(node)
    reply = execute(node, name, "process", checks.sized_payload("double"))
    assert reply.status == 200, reply
    assert checks.job_count(node) == before + 1
    checks.link_up(node)


# deploy_first(inproc); run_sync(user=alice); read(job, who=stranger) / read(who=anonymous)
def test_another_users_job_is_404_and_an_anonymous_read_is_401(node: Driver) -> None:
    name = deploy(node, "inproc")
    job = finished_job(node, name, "carol")
    for path in (f"/v1/jobs/{job}", f"/v1/jobs/{job}/results"):
        assert node.http("GET", path, user="bob").status == 404
        assert node.http("GET", path).status == 401
        assert node.http("GET", path, user="carol").status == 200
        assert node.http("GET", path, user="alice").status == 200     # an administrator
    assert node.http("DELETE", f"/v1/jobs/{job}", user="bob").status == 404
    assert node.http("GET", f"/v1/jobs/{job}", user="carol").status == 200


# deploy_first(inproc); run_sync(user=bob); dismiss(job, who=owner); jobs_match_the_model()
def test_a_dismissed_finished_job_is_404_everywhere(node: Driver) -> None:
    name = deploy(node, "inproc")
    job = finished_job(node, name, "bob")
    reply = node.http("DELETE", f"/v1/jobs/{job}", user="bob")
    assert reply.status == 200 and reply.json()["status"] == "dismissed", reply
    model_job = JobModel(id=job, owner="bob", pts=name, mode="inproc", data=None,
                                size=0, versions={1})
    assert checks.gone_codes(node, model_job) == dict.fromkeys(
        ("job.status", "job.result", f"/v1/jobs/{job}", f"/v1/jobs/{job}/results"), 404)
    done = node.cli("jobs", "result", job)
    assert done.returncode != 0 and "not_found" in done.stderr, done.stdout



# deploy_first(process); replace(how=web) [its probe run]: "sync run of m-process v2 ...
# internal". The old generation's stop removed the work area the new one runs in.
def test_a_run_after_replacing_a_process_mode_pts_succeeds_on_the_new_version(
        node: Driver) -> None:
    name = deploy(node, "process")
    write_code(node.code_dir, "process", 2)
    reply = node.http("PUT", f"/v1/processes/{name}", user="alice",
                      body={"spec": spec("process", 2, node.code_dir)})
    assert reply.status == 204, reply
    for n in range(2):
        reply = execute(node, name, "process", {"n": n})
        assert reply.status == 200, reply
        assert json.loads(reply.json()["result"]) == {"v": 2, "echo": {"n": n}}
