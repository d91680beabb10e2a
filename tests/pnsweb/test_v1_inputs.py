"""/v1 execute inputs refused by the daemon's checks are 400 problem+json, nothing run.

The fake daemon checks inputs with pnsd's own :class:`pnsd.validation.InputCheck`, as pnsd
does; the rules themselves are tested in tests/pnsd/test_validation.py, the real seam in
tests/integration/test_web_interface.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from pnsweb.app import create_app
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
    _daemon, book = book_and_daemon
    response = await execute(client, pts, inputs)
    assert response.status == 400
    assert response.content_type == PROBLEM
    problem = await response.json()
    first = problem["errors"][0]
    assert (first["input"], first["pointer"], first["rule"]) == (pointer.split("/")[2],
                                                                  pointer, rule)
    assert f"at {pointer} fails {rule}" in problem["detail"]
    assert book.jobs == {}      # the daemon refused it: nothing ran, nothing recorded


async def test_a_bad_input_is_refused_before_an_async_job_is_submitted(
        client: Any, book_and_daemon: Any) -> None:
    _daemon, book = book_and_daemon
    response = await execute(client, "sleep", {"seconds": "abc"}, Prefer="respond-async")
    assert response.status == 400
    assert book.jobs == {}


async def test_inputs_within_their_schemas_still_run(client: Any, book_and_daemon: Any) -> None:
    book: JobBook = book_and_daemon[1]
    response = await execute(client, "sleep", {"seconds": 0.5})
    assert response.status == 200
    assert list(book.inputs.values()) == [{"seconds": 0.5}]


async def test_a_qualified_value_s_pointer_points_into_the_body(
        client: Any, book_and_daemon: Any) -> None:
    response = await execute(client, "sleep", {"seconds": {"value": "x"}})
    errors = (await response.json())["errors"]
    assert [(e["pointer"], e["rule"]) for e in errors] == [("/inputs/seconds/value", "type")]


async def test_an_unknown_input_of_a_declaring_process_is_400_naming_it(client: Any) -> None:
    response = await execute(client, "sleep", {"seconds": 1, "minutes": 2})
    assert response.status == 400
    problem = await response.json()
    assert [(e["input"], e["pointer"], e["rule"]) for e in problem["errors"]] == [
        ("minutes", "/inputs/minutes", "declared")]
    assert "its inputs: seconds" in problem["detail"]


async def test_a_process_declaring_no_inputs_takes_any_names(
        client: Any, book_and_daemon: Any) -> None:
    book: JobBook = book_and_daemon[1]
    response = await execute(client, "echo", {"x": 1, "anything": [True]})
    assert response.status == 200
    assert await response.json() == {"x": 1, "anything": [True]}
    assert list(book.inputs.values()) == [{"x": 1, "anything": [True]}]


async def test_an_input_by_reference_is_refused_naming_it(client: Any) -> None:
    response = await execute(client, "sleep", {"seconds": {"href": "http://elsewhere/x"}})
    assert response.status == 400
    assert (await response.json())["errors"][0]["rule"] == "href"
