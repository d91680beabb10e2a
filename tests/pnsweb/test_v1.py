"""/v1 service documents, processes and execution: the real app over a fake daemon."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from pnsweb import jsonstream, ogc, views_v1, views_v1_io
from pnsweb.app import create_app
from tests.pnsweb.fakes_v1 import AUTH, SPECS, JobBook, demo_daemon, settings

PROBLEM = "application/problem+json"


@pytest.fixture
def book_and_daemon() -> Any:
    return demo_daemon()


@pytest.fixture
async def client(aiohttp_client: Any, book_and_daemon: Any) -> Any:
    daemon, _book = book_and_daemon
    app = create_app(settings(max_body=4096), client=daemon)
    return await aiohttp_client(app)


@pytest.fixture
def book(book_and_daemon: Any) -> JobBook:
    return book_and_daemon[1]  # type: ignore[no-any-return]


async def execute(client: TestClient[Any, Any], pts: str, body: Any, **headers: str) -> Any:
    return await client.post(f"/v1/processes/{pts}/execution", json=body,
                             headers={**AUTH, **headers})


# -- service documents ------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1", "/v1/"])
async def test_landing_page_links_the_standard_relations(client: Any, path: str) -> None:
    response = await client.get(path)
    assert response.status == 200
    rels = {link["rel"]: link["href"] for link in (await response.json())["links"]}
    origin = str(client.make_url(""))
    assert rels["service-desc"] == f"{origin}/v1/openapi.json"
    assert rels[ogc.REL + "processes"] == f"{origin}/v1/processes"
    assert rels[ogc.REL + "job-list"] == f"{origin}/v1/jobs"
    assert rels[ogc.REL + "conformance"] == f"{origin}/v1/conformance"


async def test_conformance_declares_core_description_json_job_list_and_dismiss(
        client: Any) -> None:
    conforms = (await (await client.get("/v1/conformance")).json())["conformsTo"]
    base = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
    for name in ("core", "ogc-process-description", "json", "job-list", "dismiss"):
        assert base + name in conforms


# -- processes --------------------------------------------------------------------------------

async def test_process_list_has_a_summary_with_links_for_every_pts(client: Any) -> None:
    body = await (await client.get("/v1/processes")).json()
    summaries = {p["id"]: p for p in body["processes"]}
    assert set(summaries) == set(SPECS)
    echo = summaries["echo"]
    assert echo["jobControlOptions"] == ["sync-execute", "async-execute", "dismiss"]
    assert echo["outputTransmission"] == ["value", "reference"]
    assert echo["title"] == "Echo" and echo["keywords"] == ["demo"]
    assert {link["rel"] for link in echo["links"]} >= {"self", ogc.REL + "execute"}


@pytest.mark.parametrize(("pts", "inputs", "outputs"), [
    ("echo", {}, ["result"]),     # it declares none: it takes any
    ("sleep", {"seconds": {"type": "number", "minimum": 0, "maximum": 86400}}, ["slept"]),
    ("hello", {"infile": {"type": "string"}}, ["outfile"]),
    ("hello-worker", {"name": {"type": "string"}}, ["result"]),
    ("custom", {}, ["result"]),
])
async def test_process_description_is_the_interface_the_spec_declares(
        client: Any, pts: str, inputs: dict[str, Any], outputs: list[str]) -> None:
    response = await client.get(f"/v1/processes/{pts}")
    assert response.status == 200
    body = await response.json()
    assert body["id"] == pts
    assert body["version"] == SPECS[pts]["version"]
    assert {key: value["schema"] for key, value in body["inputs"].items()} == inputs
    assert list(body["outputs"]) == outputs


async def test_testcalc_describes_its_three_named_inputs(client: Any) -> None:
    body = await (await client.get("/v1/processes/testcalc")).json()
    assert set(body["inputs"]) == {"creator", "rootcause", "input"}
    assert body["inputs"]["input"]["schema"]["type"] == "object"


@pytest.mark.parametrize("path", ["/v1/processes/nope", "/v1/processes/..%2Fx",
                                  "/v1/processes/nope/execution"])
async def test_unknown_process_is_the_no_such_process_problem(client: Any, path: str) -> None:
    if path.endswith("execution"):
        response = await client.post(path, json={"inputs": {}}, headers=AUTH)
    else:
        response = await client.get(path)
    assert response.status == 404
    assert response.content_type == PROBLEM
    body = await response.json()
    assert body["type"] == ogc.NO_SUCH_PROCESS
    assert body["title"] == "No such process"


# -- execution --------------------------------------------------------------------------------

async def test_sync_execution_answers_the_raw_value_by_default(client: Any) -> None:
    response = await execute(client, "echo", {"inputs": {"value": {"a": [1, 2]}}})
    assert response.status == 200
    assert await response.json() == {"value": {"a": [1, 2]}}    # echo's result: the map
    assert "/v1/jobs/" in response.headers["Link"]


async def test_respond_sync_preference_is_applied(client: Any) -> None:
    response = await execute(client, "echo", {"inputs": {"value": 3}}, Prefer="respond-sync")
    assert response.status == 200
    assert response.headers["Preference-Applied"] == "respond-sync"
    assert await response.json() == {"value": 3}


async def test_document_response_is_keyed_by_output_id(client: Any) -> None:
    response = await execute(client, "hello", {"inputs": {"infile": "Ada"},
                                               "response": "document"})
    assert response.status == 200
    assert await response.json() == {"outfile": "hello Ada!"}


@pytest.mark.parametrize(("pts", "inputs", "sent"), [
    ("echo", {"value": [1]}, {"value": [1]}),
    ("sleep", {"seconds": 0.5}, {"seconds": 0.5}),
    ("hello-worker", {"name": "Ada"}, {"name": "Ada"}),
    ("hello-worker", {}, {}),
    ("hello", {"infile": "Ada"}, {"infile": "Ada"}),
    ("testcalc", {"creator": "c", "rootcause": "r", "input": {"meta": {"a": 1}, "d": [2]}},
     {"creator": "c", "rootcause": "r", "input": {"meta": {"a": 1}, "d": [2]}}),
    ("echo", {"value": {"value": "aGk=", "encoding": "base64"}}, {"value": b"hi"}),
    ("echo", {"value": {"value": 7, "mediaType": "application/json"}}, {"value": 7}),
    ("picture", {"image": "iVBORw=="}, {"image": b"\x89PNG"}),
    ("picture", {"image": {"value": "iVBORw==", "mediaType": "image/png"}},
     {"image": b"\x89PNG"}),
])
async def test_the_inputs_map_is_the_pts_input_in_every_mode(
        client: Any, book: JobBook, pts: str, inputs: Any, sent: Any) -> None:
    response = await execute(client, pts, {"inputs": inputs})
    assert response.status == 200
    assert list(book.inputs.values())[-1] == sent


async def test_binary_outputs_are_their_media_type_raw_and_qualified_in_a_document(
        client: Any) -> None:
    inputs = {"image": {"value": base64.b64encode(b"\x89PNG").decode(), "mediaType": "image/png"}}
    raw = await execute(client, "picture", {"inputs": inputs, "outputs": {"png": {}}})
    assert raw.content_type == "image/png"
    assert await raw.read() == b"\x89PNG"
    doc = await execute(client, "picture", {"inputs": inputs, "response": "document"})
    assert await doc.json() == {"png": {"value": "iVBORw==", "encoding": "base64",
                                        "mediaType": "image/png"}, "size": 4}


async def test_bytes_inside_a_json_output_are_base64_text(client: Any) -> None:
    inputs = {"value": {"value": base64.b64encode(b"\x00\x01").decode(), "encoding": "base64"}}
    doc = await execute(client, "echo", {"inputs": inputs, "response": "document"})
    assert (await doc.json())["result"] == {"value": "AAE="}


@pytest.mark.parametrize(("image", "rule"), [
    ({"value": "iVBORw==", "mediaType": "image/gif"}, "contentMediaType"),
    ({"value": "not base64!", "mediaType": "image/png"}, "contentEncoding"),
    (17, "contentMediaType"),
])
async def test_a_binary_input_of_another_media_type_or_not_base64_is_400(
        client: Any, book: JobBook, image: Any, rule: str) -> None:
    response = await execute(client, "picture", {"inputs": {"image": image}})
    assert response.status == 400
    errors = (await response.json())["errors"]
    assert [(e["input"], e["rule"]) for e in errors] == [("image", rule)]
    assert book.jobs == {}


async def test_async_execution_is_201_with_location_and_status_info(
        client: Any, book: JobBook) -> None:
    response = await execute(client, "sleep", {"inputs": {"seconds": 5}},
                             Prefer="respond-async")
    assert response.status == 201
    assert response.headers["Preference-Applied"] == "respond-async"
    body = await response.json()
    job_id = body["jobID"]
    assert response.headers["Location"] == str(client.make_url(f"/v1/jobs/{job_id}"))
    assert body["type"] == "process"
    assert body["processID"] == "sleep"
    assert body["status"] == "accepted"
    assert body["created"].endswith("Z")
    assert book.inputs[job_id] == {"seconds": 5}


async def test_executions_belong_to_the_user_who_sent_them(
        client: Any, book_and_daemon: Any) -> None:
    daemon, book = book_and_daemon
    await execute(client, "echo", {"inputs": {"value": 1}})
    await execute(client, "sleep", {"inputs": {"seconds": 1}}, Prefer="respond-async")
    assert daemon.calls_of("run")[-1].body["owner"] == "bob"
    assert daemon.calls_of("submit")[-1].body["owner"] == "bob"
    assert {job["owner"] for job in book.jobs.values()} == {"bob"}


async def test_a_repeated_idempotency_key_returns_the_first_job(
        client: Any, book_and_daemon: Any) -> None:
    daemon, book = book_and_daemon
    replies = [await execute(client, "sleep", {"inputs": {"seconds": 1}},
                             Prefer="respond-async", **{"Idempotency-Key": "order-7"})
               for _ in range(2)]
    assert [r.status for r in replies] == [201, 201]
    first, second = [(await r.json())["jobID"] for r in replies]
    assert first == second and len(book.jobs) == 1
    assert daemon.calls_of("submit")[-1].body["idempotency_key"] == "order-7"


@pytest.mark.parametrize(("prefer", "key"), [("", "k"), ("respond-async", "x" * 256),
                                             ("respond-async", "a\tb")])
async def test_an_idempotency_key_that_cannot_be_honoured_is_400(
        client: Any, book: JobBook, prefer: str, key: str) -> None:
    headers = {"Idempotency-Key": key}
    if prefer:
        headers["Prefer"] = prefer
    response = await execute(client, "echo", {"inputs": {"value": 1}}, **headers)
    assert response.status == 400
    assert "Idempotency-Key" in (await response.json())["detail"]
    assert book.jobs == {}


async def test_a_submission_beyond_the_queue_is_429_with_retry_after_at_once(
        client: Any, book: JobBook) -> None:
    book.capacity = 2
    statuses = [(await execute(client, "sleep", {"inputs": {"seconds": 9}},
                               Prefer="respond-async")) for _ in range(3)]
    assert [r.status for r in statuses] == [201, 201, 429]
    assert statuses[2].headers["Retry-After"] == "1"
    assert (await statuses[2].json())["code"] == "busy"
    assert len(book.jobs) == 2


@pytest.mark.parametrize(("body", "detail"), [
    ({"inputs": {"seconds": 1, "extra": 2}}, "no input 'extra'"),
    ({"inputs": {}}, "'seconds' at /inputs/seconds fails minOccurs"),
    ({"inputs": []}, "'inputs' must be an object"),
    ({"inputs": {"seconds": 1}, "response": "weird"}, "'response'"),
    ({"inputs": {"seconds": 1}, "outputs": {"other": {}}}, "no output other"),
    ({"inputs": {"seconds": {"href": "http://x/y"}}}, "by reference"),
    ([1, 2], "JSON object"),
])
async def test_bad_execute_requests_are_400_problems_and_run_nothing(
        client: Any, book: JobBook, body: Any, detail: str) -> None:
    response = await execute(client, "sleep", body)
    assert response.status == 400
    assert response.content_type == PROBLEM
    assert detail in (await response.json())["detail"]
    assert book.jobs == {}


async def test_invalid_json_is_400_and_wrong_content_type_is_415(client: Any) -> None:
    bad = await client.post("/v1/processes/echo/execution", data=b"{nope",
                            headers={**AUTH, "Content-Type": "application/json"})
    assert bad.status == 400
    assert "not valid JSON" in (await bad.json())["detail"]
    form = await client.post("/v1/processes/echo/execution", data=b"a=1",
                             headers={**AUTH, "Content-Type": "text/plain"})
    assert form.status == 415


async def test_body_over_the_limit_is_413_even_when_streamed(client: Any) -> None:
    big = b'{"inputs": {"value": "' + b"x" * 5000 + b'"}}'
    response = await client.post("/v1/processes/echo/execution", data=big,
                                 headers={**AUTH, "Content-Type": "application/json"})
    assert response.status == 413

    async def chunks() -> Any:       # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b" " * 1000
    streamed = await client.post("/v1/processes/echo/execution", data=chunks(),
                                 headers={**AUTH, "Content-Type": "application/json"})
    assert streamed.status == 413


async def test_execution_needs_credentials(client: Any, book: JobBook) -> None:
    response = await client.post("/v1/processes/echo/execution", json={"inputs": {"value": 1}})
    assert response.status == 401
    assert "WWW-Authenticate" in response.headers
    assert book.jobs == {}


async def test_a_failing_run_is_a_problem_from_the_daemon_error(
        client: Any, book_and_daemon: Any) -> None:
    daemon, _ = book_and_daemon
    daemon.fail("run", "pts_error", "demo failure")
    response = await execute(client, "echo", {"inputs": {"value": 1}})
    assert response.status == 502
    assert response.content_type == PROBLEM
    assert "demo failure" in (await response.json())["detail"]


async def test_large_raw_results_are_streamed_in_chunks(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(views_v1_io, "STREAM_THRESHOLD", 100)
    monkeypatch.setattr(views_v1_io, "CHUNK", 64)
    writes: list[int] = []
    write = web.StreamResponse.write

    async def counting_write(self: web.StreamResponse, data: Any) -> None:
        writes.append(len(data))
        await write(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", counting_write)
    response = await execute(client, "echo", {"inputs": {"value": "y" * 1000}})
    assert response.status == 200
    assert await response.json() == {"value": "y" * 1000}
    assert response.headers["Content-Length"] == str(1013)
    assert max(writes) == 64 and sum(writes) == 1013


async def test_a_raw_json_result_with_a_large_string_is_sent_in_pieces_chunked(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never encoded whole (the value, its JSON text and that text's bytes at once): written a
    piece at a time, with chunked transfer since its length is not known beforehand."""
    monkeypatch.setattr(jsonstream, "LARGE", 1000)   # the app's max_body is 4096 here
    monkeypatch.setattr(jsonstream, "PIECE", 120)
    writes: list[int] = []
    write = web.StreamResponse.write

    async def counting_write(self: web.StreamResponse, data: Any) -> None:
        writes.append(len(data))
        await write(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", counting_write)
    value = 'y"\n' * 700
    response = await execute(client, "echo", {"inputs": {"value": value}})
    assert response.status == 200
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.headers
    assert await response.read() == views_v1_io.encode_json({"value": value})
    assert len(writes) > 10 and max(writes) <= 6 * 120


async def test_process_descriptions_are_cached_briefly(client: Any, book_and_daemon: Any) -> None:
    daemon, _ = book_and_daemon
    for _ in range(3):
        assert (await execute(client, "echo", {"inputs": {"value": 1}})).status == 200
    assert len(daemon.calls_of("pts.describe")) == 1
    assert len(daemon.calls_of("run")) == 3


async def test_an_output_by_reference_is_a_link_to_the_job_s_output(
        client: Any, book: JobBook) -> None:
    response = await execute(client, "picture", {
        "inputs": {"image": "iVBORw=="}, "response": "document",
        "outputs": {"png": {"transmissionMode": "reference"}, "size": {}}})
    assert response.status == 200
    document = await response.json()
    [job_id] = book.jobs
    assert document == {"png": {"href": str(client.make_url(
        f"/v1/jobs/{job_id}/results/png")), "type": "image/png", "title": "png"}, "size": 4}
    fetched = await client.get(URL(document["png"]["href"]).path, headers=AUTH)
    assert (fetched.content_type, await fetched.read()) == ("image/png", b"\x89PNG")


async def test_a_sync_execution_works_out_its_base_url_once(
        client: Any, book: JobBook, monkeypatch: pytest.MonkeyPatch) -> None:
    bases: list[str] = []

    def counted(request: web.Request) -> str:
        bases.append(views_v1_io.base_of(request))
        return bases[-1]

    monkeypatch.setattr(views_v1, "base_of", counted)
    response = await execute(client, "picture", {
        "inputs": {"image": "iVBORw=="}, "response": "document",
        "outputs": {"png": {"transmissionMode": "reference"}, "size": {}}})
    assert response.status == 200
    [job_id] = book.jobs
    assert bases == [str(client.make_url("/v1"))]
    assert response.headers["Link"] == f'<{bases[0]}/jobs/{job_id}>; rel="monitor"'
    assert (await response.json())["png"]["href"] == f"{bases[0]}/jobs/{job_id}/results/png"


async def test_raw_outputs_by_reference_are_204_with_a_link_each(client: Any) -> None:
    response = await execute(client, "picture", {
        "inputs": {"image": "iVBORw=="},
        "outputs": {"png": {"transmissionMode": "reference"}}})
    assert response.status == 204
    [link] = response.headers.getall("Link")[1:]      # after the job's monitor link
    assert "/results/png>" in link and 'type="image/png"' in link


async def test_a_reference_to_a_result_the_node_does_not_keep_is_400_before_running(
        aiohttp_client: Any) -> None:
    daemon, book = demo_daemon()
    described = daemon.handlers["pts.describe"]
    daemon.on("pts.describe", lambda body: {**described(body), "sync_results_kept": False})
    client = await aiohttp_client(create_app(settings(), client=daemon))
    response = await execute(client, "picture", {
        "inputs": {"image": "iVBORw=="}, "outputs": {"png": {"transmissionMode": "reference"}}})
    assert response.status == 400
    assert "respond-async" in (await response.json())["detail"]
    assert book.jobs == {}
    asynchronous = await execute(client, "picture", {
        "inputs": {"image": "iVBORw=="}, "outputs": {"png": {"transmissionMode": "reference"}}},
        Prefer="respond-async")
    assert asynchronous.status == 201


@pytest.mark.parametrize("mode", ["inline", "by-carrier-pigeon"])
async def test_an_unknown_transmission_mode_is_400(client: Any, mode: str) -> None:
    response = await execute(client, "picture", {
        "inputs": {"image": "iVBORw=="}, "outputs": {"png": {"transmissionMode": mode}}})
    assert response.status == 400
