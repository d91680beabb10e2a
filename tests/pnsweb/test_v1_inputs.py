"""/v1 execute inputs checked against the process description: 400 before anything runs."""

from __future__ import annotations

from typing import Any

import pytest

from pnsweb import inputschema, ogc
from pnsweb.app import create_app
from pnsweb.errors import ApiError
from tests.pnsweb.fakes_v1 import AUTH, JobBook, demo_daemon, settings

PROBLEM = "application/problem+json"


@pytest.fixture
def book_and_daemon() -> Any:
    return demo_daemon()


@pytest.fixture
async def client(aiohttp_client: Any, book_and_daemon: Any) -> Any:
    daemon, _book = book_and_daemon
    return await aiohttp_client(create_app(settings(), client=daemon))


async def execute(client: Any, pts: str, inputs: Any, **headers: str) -> Any:
    return await client.post(f"/v1/processes/{pts}/execution", json={"inputs": inputs},
                             headers={**AUTH, **headers})


@pytest.mark.parametrize(("pts", "inputs", "pointer", "rule"), [
    ("sleep", {"seconds": "abc"}, "/inputs/seconds", "type"),
    ("sleep", {"seconds": -1}, "/inputs/seconds", "minimum"),
    ("sleep", {"seconds": 10**9}, "/inputs/seconds", "maximum"),
    ("sleep", {"seconds": {"value": "abc", "mediaType": "application/json"}},
     "/inputs/seconds/value", "type"),
    ("sleep", {}, "/inputs/seconds", "minOccurs"),
    ("hello", {"infile": 5}, "/inputs/infile", "type"),
    ("hello-worker", {"name": ["Ada"]}, "/inputs/name", "type"),
    ("testcalc", {"creator": "c", "rootcause": "r", "input": {"data": [1]}},
     "/inputs/input", "required"),
])
async def test_an_input_that_breaks_its_schema_is_400_naming_input_pointer_and_rule(
        client: Any, book_and_daemon: Any, pts: str, inputs: Any, pointer: str,
        rule: str) -> None:
    daemon, book = book_and_daemon
    response = await execute(client, pts, inputs)
    assert response.status == 400
    assert response.content_type == PROBLEM
    problem = await response.json()
    first = problem["errors"][0]
    assert (first["input"], first["pointer"], first["rule"]) == (pointer.split("/")[2],
                                                                  pointer, rule)
    assert f"at {pointer} fails {rule}" in problem["detail"]
    assert book.jobs == {} and not daemon.calls_of("run")


async def test_a_bad_input_is_refused_before_an_async_job_is_submitted(
        client: Any, book_and_daemon: Any) -> None:
    daemon, book = book_and_daemon
    response = await execute(client, "sleep", {"seconds": "abc"}, Prefer="respond-async")
    assert response.status == 400
    assert book.jobs == {} and not daemon.calls_of("submit")


async def test_inputs_within_their_schemas_still_run(client: Any, book_and_daemon: Any) -> None:
    book: JobBook = book_and_daemon[1]
    response = await execute(client, "sleep", {"seconds": 0.5})
    assert response.status == 200
    assert list(book.inputs.values()) == [0.5]


async def test_validators_are_compiled_once_not_per_request(client: Any) -> None:
    await execute(client, "sleep", {"seconds": "abc"})
    compiled = inputschema.validator.cache_info().currsize
    for value in ("x", -1, 2, "y"):
        await execute(client, "sleep", {"seconds": value})
    assert inputschema.validator.cache_info().currsize == compiled


# -- the rules on a model of their own ---------------------------------------------------------

ITEM = {"type": "object", "properties": {"a/b": {"type": "integer"}}}
MODEL = ogc.ProcessModel(
    id="p", title="p", description="", version="1", mode="worker",
    inputs=(ogc.Port("pair", "two items", ITEM, max_occurs=2),
            ogc.Port("note", "optional text", {"type": "string"}, required=False)),
    outputs=(ogc.RESULT,),
)


def refusal(inputs: Any) -> dict[str, Any]:
    with pytest.raises(ApiError) as caught:
        inputschema.check_inputs(MODEL, inputs)
    assert caught.value.status == 400
    return caught.value.extra


def test_each_occurrence_is_checked_with_its_index_in_the_pointer() -> None:
    errors = refusal({"pair": [{"a/b": 1}, {"a/b": "two"}]})["errors"]
    assert errors == [{"input": "pair", "pointer": "/inputs/pair/1/a~1b", "rule": "type",
                       "message": "'two' is not of type 'integer'"}]


def test_more_occurrences_than_max_occurs_are_refused() -> None:
    errors = refusal({"pair": [{}, {}, {}]})["errors"]
    assert [(e["pointer"], e["rule"]) for e in errors] == [("/inputs/pair", "maxOccurs")]


def test_every_failure_is_listed_and_a_long_value_is_not_quoted_whole() -> None:
    errors = refusal({"note": "x" * 10_000})["errors"]   # pair missing, note fine
    assert [e["rule"] for e in errors] == ["minOccurs"]
    errors = refusal({"pair": {"a/b": "y" * 10_000}, "note": 3})["errors"]
    assert [e["pointer"] for e in errors] == ["/inputs/pair/a~1b", "/inputs/note"]
    assert all(len(e["message"]) <= inputschema.MAX_MESSAGE for e in errors)


def test_valid_inputs_pass_and_optional_ones_may_be_left_out() -> None:
    inputschema.check_inputs(MODEL, {"pair": [{"a/b": 1}, {"a/b": 2}]})
    inputschema.check_inputs(MODEL, {"pair": {"a/b": 1}, "note": "n"})


def test_an_invalid_declared_schema_is_the_process_s_fault_not_the_caller_s() -> None:
    bad = ogc.ProcessModel(id="b", title="b", description="", version="1", mode="worker",
                           inputs=(ogc.Port("x", "x", {"type": 12}),), outputs=(ogc.RESULT,))
    with pytest.raises(ApiError) as caught:
        inputschema.check_inputs(bad, {"x": 1})
    assert caught.value.status == 502
