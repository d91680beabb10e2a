"""/v1 jobs: list and paging, statusInfo, results, dismiss and the Server-Sent Events stream,
each as the job's owner (the ordinary user ``USER``) unless a test says otherwise."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from pnsweb import ogc, views_v1_jobs
from pnsweb.app import create_app
from protocols.errors import RemoteError
from tests.pnsweb.fakes import ADMIN, basic
from tests.pnsweb.fakes_v1 import AUTH, JobBook, demo_daemon, record, settings

PROBLEM = "application/problem+json"


@pytest.fixture
def book_and_daemon() -> Any:
    return demo_daemon()


@pytest.fixture
def book(book_and_daemon: Any) -> JobBook:
    return book_and_daemon[1]  # type: ignore[no-any-return]


@pytest.fixture
def app(book_and_daemon: Any) -> web.Application:
    return create_app(settings(), client=book_and_daemon[0])


@pytest.fixture
async def client(aiohttp_client: Any, app: web.Application) -> Any:
    """A client that sends the ordinary user's credentials with every request."""
    return await aiohttp_client(app, headers=AUTH)


@pytest.fixture
async def anonymous(aiohttp_client: Any, app: web.Application) -> Any:
    return await aiohttp_client(app)


# -- list, status -----------------------------------------------------------------------------

async def test_job_list_pages_with_limit_and_next_prev_links(client: Any, book: JobBook) -> None:
    for _ in range(5):
        book.add(record("echo", "successful"))
    first = await (await client.get("/v1/jobs?limit=2")).json()
    assert len(first["jobs"]) == 2
    assert first["numberMatched"] == 5
    assert all(job["type"] == "process" for job in first["jobs"])
    links = {link["rel"]: link["href"] for link in first["links"]}
    assert "prev" not in links
    assert links["next"].startswith(str(client.make_url("/v1/jobs?")))
    second = await (await client.get(URL(links["next"]).path_qs)).json()
    assert [j["jobID"] for j in second["jobs"]] == list(reversed(book.jobs))[2:4]
    assert {link["rel"] for link in second["links"]} == {"self", "next", "prev"}


async def test_job_list_filters_by_process_and_status(client: Any, book: JobBook) -> None:
    book.add(record("echo", "successful"))
    wanted = book.add(record("sleep", "running"))
    body = await (await client.get("/v1/jobs?processID=sleep&status=running")).json()
    assert [j["jobID"] for j in body["jobs"]] == [wanted["id"]]
    assert "processID=sleep" in body["links"][0]["href"]


@pytest.mark.parametrize("query", ["limit=0", "limit=x", "offset=-1", "status=lost"])
async def test_bad_job_list_parameters_are_400(client: Any, query: str) -> None:
    response = await client.get(f"/v1/jobs?{query}")
    assert response.status == 400
    assert response.content_type == PROBLEM


async def test_job_status_is_status_info_with_rfc3339_times(client: Any, book: JobBook) -> None:
    job = book.add(record("echo", "successful", started=1_700_000_000.5,
                          finished=1_700_000_001.0, progress=100))
    body = await (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert body["jobID"] == job["id"]
    assert body["processID"] == "echo"
    assert body["status"] == "successful"
    assert body["progress"] == 100
    assert body["created"] == "2023-11-14T22:13:20.000Z"
    assert body["started"] == "2023-11-14T22:13:20.500Z"
    rels = {link["rel"] for link in body["links"]}
    assert ogc.REL_RESULTS in rels


async def test_unfinished_job_has_no_results_link_and_no_finish_time(
        client: Any, book: JobBook) -> None:
    job = book.add(record("sleep", "running"))
    body = await (await client.get(f"/v1/jobs/{job['id']}")).json()
    assert "finished" not in body
    assert ogc.REL_RESULTS not in {link["rel"] for link in body["links"]}


@pytest.mark.parametrize("suffix", ["", "/results", "/events"])
@pytest.mark.parametrize("job_id", [uuid.uuid4().hex, "not-a-job", "A" * 32])
async def test_unknown_or_malformed_job_is_no_such_job(
        client: Any, job_id: str, suffix: str) -> None:
    response = await client.get(f"/v1/jobs/{job_id}{suffix}")
    assert response.status == 404
    assert response.content_type == PROBLEM
    body = await response.json()
    assert body["type"] == ogc.NO_SUCH_JOB
    assert body["title"] == "No such job"


# -- results ----------------------------------------------------------------------------------

async def test_results_of_an_unfinished_job_are_result_not_ready(
        client: Any, book: JobBook) -> None:
    job = book.add(record("sleep", "running"))
    response = await client.get(f"/v1/jobs/{job['id']}/results")
    assert response.status == 404
    body = await response.json()
    assert body["type"] == ogc.RESULT_NOT_READY
    assert body["title"] == "Result not ready"
    assert "running" in body["detail"]


async def test_results_are_a_document_keyed_by_output_id(client: Any, book: JobBook) -> None:
    sleep = book.add(record("sleep", "successful"), {"slept": 1})
    hello = book.add(record("hello", "successful"), {"outputs": {"outfile": "hi"}})
    assert await (await client.get(f"/v1/jobs/{sleep['id']}/results")).json() == {"slept": 1}
    assert await (await client.get(f"/v1/jobs/{hello['id']}/results")).json() == {
        "outfile": "hi"}


async def test_one_output_is_served_alone_with_its_media_type(
        client: Any, book: JobBook) -> None:
    hello = book.add(record("hello", "successful"), {"outputs": {"outfile": "hi\n"}})
    picture = book.add(record("picture", "successful"), {"png": b"\x89PNG", "size": 4})
    text = await client.get(f"/v1/jobs/{hello['id']}/results/outfile", headers=AUTH)
    assert (text.status, text.content_type, await text.text()) == (200, "text/plain", "hi\n")
    png = await client.get(f"/v1/jobs/{picture['id']}/results/png", headers=AUTH)
    assert (png.content_type, await png.read()) == ("image/png", b"\x89PNG")
    size = await client.get(f"/v1/jobs/{picture['id']}/results/size", headers=AUTH)
    assert (size.content_type, await size.json()) == ("application/json", 4)


async def test_an_output_is_its_owner_s_and_an_unknown_one_is_404(
        client: Any, book: JobBook) -> None:
    job = book.add(record("picture", "successful", owner="ann"), {"png": b"x", "size": 1})
    path = f"/v1/jobs/{job['id']}/results/png"
    other = await client.get(path, headers=AUTH)           # bob's credentials
    assert other.status == 404
    assert (await other.json())["type"] == ogc.NO_SUCH_JOB
    assert (await client.get(path, headers=basic(ADMIN))).status == 200
    unknown = await client.get(f"/v1/jobs/{job['id']}/results/nope", headers=basic(ADMIN))
    assert unknown.status == 404 and "its outputs: png, size" in (await unknown.json())["detail"]


async def test_an_output_of_an_unfinished_job_is_result_not_ready(
        client: Any, book: JobBook) -> None:
    job = book.add(record("picture", "running"))
    response = await client.get(f"/v1/jobs/{job['id']}/results/png", headers=AUTH)
    assert response.status == 404
    assert (await response.json())["type"] == ogc.RESULT_NOT_READY


async def test_results_of_an_undeployed_pts_fall_back_to_a_single_output(
        client: Any, book: JobBook) -> None:
    job = book.add(record("gone", "successful"), 42)
    assert await (await client.get(f"/v1/jobs/{job['id']}/results")).json() == {"result": 42}


async def test_results_of_a_failed_job_are_the_failure_as_a_problem(
        client: Any, book: JobBook) -> None:
    job = book.add(record("echo", "failed", message="boom"))
    response = await client.get(f"/v1/jobs/{job['id']}/results")
    assert response.status == 502
    assert response.content_type == PROBLEM
    assert "boom" in (await response.json())["detail"]


# -- dismiss ----------------------------------------------------------------------------------

async def test_dismissing_a_queued_job_deletes_it(client: Any, book: JobBook) -> None:
    job = book.add(record("sleep", "accepted"))
    response = await client.delete(f"/v1/jobs/{job['id']}", headers=AUTH)
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "dismissed"
    assert job["id"] not in book.jobs


async def test_dismissing_a_running_job_reports_dismissed(client: Any, book: JobBook) -> None:
    job = book.add(record("sleep", "running"))
    body = await (await client.delete(f"/v1/jobs/{job['id']}", headers=AUTH)).json()
    assert body["status"] == "dismissed"
    assert body["jobID"] == job["id"]


async def test_dismissing_a_finished_job_deletes_it(client: Any, book: JobBook) -> None:
    job = book.add(record("echo", "successful"), 1)
    response = await client.delete(f"/v1/jobs/{job['id']}", headers=AUTH)
    assert (await response.json())["status"] == "dismissed"
    assert job["id"] not in book.jobs
    assert (await client.get(f"/v1/jobs/{job['id']}")).status == 404


async def test_dismiss_needs_credentials(anonymous: Any, book: JobBook) -> None:
    job = book.add(record("sleep", "accepted"))
    assert (await anonymous.delete(f"/v1/jobs/{job['id']}")).status == 401
    assert book.jobs[job["id"]]["status"] == "accepted"


async def test_dismissing_an_unknown_job_is_no_such_job(client: Any) -> None:
    response = await client.delete(f"/v1/jobs/{uuid.uuid4().hex}", headers=AUTH)
    assert response.status == 404
    assert (await response.json())["type"] == ogc.NO_SUCH_JOB


# -- Server-Sent Events -----------------------------------------------------------------------

def parse_sse(text: str) -> list[dict[str, Any]]:
    frames = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.splitlines():
            key, _, value = line.partition(": ")
            fields[key] = json.loads(value) if key == "data" else value
        frames.append(fields)
    return frames


def watch_events(job_id: str) -> list[dict[str, Any]]:
    return [
        {"job": job_id, "seq": 1, "kind": "status", "status": "running"},
        {"job": job_id, "seq": 2, "kind": "progress", "progress": 50, "message": "half"},
        {"job": job_id, "seq": 3, "kind": "log", "line": "step"},
        {"job": job_id, "seq": 4, "kind": "status", "status": "successful"},
    ]


async def test_events_stream_as_sse_and_end_with_the_job(
        client: Any, book_and_daemon: Any) -> None:
    daemon, book = book_and_daemon
    job = book.add(record("sleep", "running"))
    daemon.on_stream("job.watch", lambda body: [
        e for e in watch_events(job["id"]) if e["seq"] > body["after"]])
    response = await client.get(f"/v1/jobs/{job['id']}/events")
    assert response.status == 200
    assert response.content_type == "text/event-stream"
    frames = parse_sse(await response.text())
    assert [(f["id"], f["event"]) for f in frames] == [
        ("1", "status"), ("2", "progress"), ("3", "log"), ("4", "status")]
    assert frames[1]["data"]["progress"] == 50


async def test_last_event_id_resumes_after_that_event(client: Any, book_and_daemon: Any) -> None:
    daemon, book = book_and_daemon
    job = book.add(record("sleep", "running"))
    daemon.on_stream("job.watch", lambda body: [
        e for e in watch_events(job["id"]) if e["seq"] > body["after"]])
    response = await client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "2"})
    assert [f["id"] for f in parse_sse(await response.text())] == ["3", "4"]
    assert daemon.calls_of("job.watch")[-1].body == {"job": job["id"], "owner": "bob",
                                                     "after": 2}


async def test_idle_streams_get_heartbeats_and_watches_resume_after_daemon_idle_end(
        client: Any, book_and_daemon: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views_v1_jobs, "HEARTBEAT", 0.02)
    daemon, book = book_and_daemon
    job = book.add(record("sleep", "running"))
    beat = asyncio.Event()
    write = web.StreamResponse.write

    async def noting_beats(response: web.StreamResponse, data: bytes) -> None:
        await write(response, data)
        if data.startswith(b": keep-alive"):
            beat.set()

    monkeypatch.setattr(web.StreamResponse, "write", noting_beats)

    async def watch(body: Any) -> Any:
        if body["after"] == 0:
            yield {"job": job["id"], "seq": 1, "kind": "status", "status": "running"}
            await asyncio.wait_for(beat.wait(), 10)   # idle until a heartbeat went out
            raise RemoteError("timeout", "no event within the watch's idle time")
        yield {"job": job["id"], "seq": 2, "kind": "status", "status": "successful"}

    daemon.on_stream("job.watch", watch)
    text = await (await client.get(f"/v1/jobs/{job['id']}/events")).text()
    assert ": keep-alive" in text
    assert [f["id"] for f in parse_sse(text) if "id" in f] == ["1", "2"]
    assert [c.body["after"] for c in daemon.calls_of("job.watch")] == [0, 1]


async def test_a_daemon_error_mid_stream_becomes_an_error_event(
        client: Any, book_and_daemon: Any) -> None:
    daemon, book = book_and_daemon
    job = book.add(record("sleep", "running"))

    async def watch(body: Any) -> Any:
        yield {"job": job["id"], "seq": 1, "kind": "status", "status": "running"}
        raise RemoteError("unavailable", "daemon stopping")

    daemon.on_stream("job.watch", watch)
    frames = parse_sse(await (await client.get(f"/v1/jobs/{job['id']}/events")).text())
    assert frames[-1]["event"] == "error"
    assert frames[-1]["data"]["code"] == "unavailable"


async def test_bad_last_event_id_is_400(client: Any, book: JobBook) -> None:
    job = book.add(record("sleep", "running"))
    response = await client.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "x"})
    assert response.status == 400


# -- owners ----------------------------------------------------------------------------------

JOB_READS = ("", "/results", "/results/result", "/events")


@pytest.mark.parametrize("suffix", JOB_READS)
async def test_anonymous_reads_of_jobs_are_401(
        anonymous: Any, book_and_daemon: Any, suffix: str) -> None:
    daemon, book = book_and_daemon
    job = book.add(record("echo", "successful"), 1)
    response = await anonymous.get(f"/v1/jobs/{job['id']}{suffix}")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    listing = await anonymous.get("/v1/jobs")
    assert listing.status == 401
    assert [c.op for c in daemon.calls if c.op.startswith("job.")] == []   # nothing asked
    assert (await anonymous.get("/v1/processes")).status == 200            # still public
    assert (await anonymous.get("/v1/processes/echo")).status == 200


@pytest.mark.parametrize("method,suffix", [
    ("GET", ""), ("GET", "/results"), ("GET", "/events"), ("DELETE", "")])
async def test_another_users_job_is_no_such_job(
        client: Any, book: JobBook, method: str, suffix: str) -> None:
    theirs = book.add(record("echo", "successful", owner="carol"), "secret")
    response = await client.request(method, f"/v1/jobs/{theirs['id']}{suffix}")
    assert response.status == 404        # not 403: whether the job exists is not revealed
    body = await response.json()
    assert body["type"] == ogc.NO_SUCH_JOB
    assert "secret" not in json.dumps(body)
    assert theirs["id"] in book.jobs


async def test_a_user_lists_only_their_jobs_and_an_admin_all(
        client: Any, anonymous: Any, book: JobBook) -> None:
    mine = book.add(record("echo", "successful"))
    theirs = book.add(record("echo", "successful", owner="carol"))
    listed = await (await client.get("/v1/jobs")).json()
    assert [job["jobID"] for job in listed["jobs"]] == [mine["id"]]
    assert listed["numberMatched"] == 1
    admin = basic(ADMIN)
    everything = await (await anonymous.get("/v1/jobs", headers=admin)).json()
    assert {job["jobID"] for job in everything["jobs"]} == {mine["id"], theirs["id"]}
    assert (await anonymous.get(f"/v1/jobs/{theirs['id']}/results", headers=admin)).status \
        == 200
    deleted = await anonymous.delete(f"/v1/jobs/{theirs['id']}", headers=admin)
    assert deleted.status == 200 and theirs["id"] not in book.jobs


async def test_job_calls_carry_the_users_name_and_none_for_an_admin(
        client: Any, anonymous: Any, book_and_daemon: Any) -> None:
    daemon, book = book_and_daemon
    job = book.add(record("echo", "successful"))
    await client.get(f"/v1/jobs/{job['id']}")
    assert daemon.calls_of("job.status")[-1].body == {"job": job["id"], "owner": "bob"}
    await anonymous.get(f"/v1/jobs/{job['id']}", headers=basic(ADMIN))
    assert daemon.calls_of("job.status")[-1].body == {"job": job["id"]}


async def test_dismissing_a_finished_job_is_one_delete_and_leaves_nothing(
        client: Any, book_and_daemon: Any) -> None:
    daemon, book = book_and_daemon
    job = book.add(record("echo", "successful"), 1)
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status == 200
    assert [c.op for c in daemon.calls if c.op.startswith("job.")] == ["job.delete"]
    for suffix in ("", "/results", "/events"):
        assert (await client.get(f"/v1/jobs/{job['id']}{suffix}")).status == 404
    assert (await client.delete(f"/v1/jobs/{job['id']}")).status == 404
