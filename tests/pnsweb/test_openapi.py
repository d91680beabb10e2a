"""The OpenAPI document at /v1/openapi.json documents every route of the app."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import hdrs, web

from pnsweb import openapi
from pnsweb.app import create_app
from tests.pnsweb.fakes_v1 import demo_daemon, settings


@pytest.fixture
def app() -> web.Application:
    return create_app(settings(), client=demo_daemon()[0])


@pytest.fixture
async def client(aiohttp_client: Any, app: web.Application) -> Any:
    return await aiohttp_client(app)


def registered(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        assert route.resource is not None
        methods = openapi.ANY_METHODS if route.method == hdrs.METH_ANY else (route.method,)
        if not route.resource.canonical.startswith(openapi.CONSOLE):   # a page, not an API
            found |= {(method.lower(), route.resource.canonical) for method in methods}
    return found


async def test_every_registered_route_is_in_the_document(
        client: Any, app: web.Application) -> None:
    response = await client.get("/v1/openapi.json")
    assert response.status == 200
    doc = await response.json()
    assert doc["openapi"].startswith("3.0")
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    routes = registered(app)
    assert routes - documented == set()
    assert documented - routes == set()
    # every face is there: /v1, the reference API and the operations endpoints
    paths = set(doc["paths"])
    assert {"/v1/processes/{processId}/execution", "/healthz", "/readyz", "/metrics"} <= paths
    assert any(path.startswith("/v0.6") for path in paths)


def test_every_faces_routes_are_listed_by_their_full_paths(app: web.Application) -> None:
    paths = set(openapi.document(app)["paths"])
    assert {"/v0.6", "/v0.6/", "/v0.6/echo", "/v0.6/sleep/{secs}", "/v1", "/v1/",
            "/v1/jobs/{jobId}", "/healthz"} <= paths
    assert all(path.startswith(("/v0.6", "/v1", "/healthz", "/readyz", "/metrics"))
               for path in paths)
    assert any(route.resource is not None and route.resource.canonical.startswith("/console")
               for route in app.router.routes())     # mounted, and left out on purpose


async def test_a_route_added_later_appears_without_editing_the_document(
        aiohttp_client: Any) -> None:
    app = create_app(settings(), client=demo_daemon()[0])

    async def extra(request: web.Request) -> web.Response:
        """An extra route."""
        return web.json_response({})

    app.router.add_put("/v1/extra/{thing}", extra)
    doc = await (await (await aiohttp_client(app)).get("/v1/openapi.json")).json()
    operation = doc["paths"]["/v1/extra/{thing}"]["put"]
    assert operation["summary"] == "An extra route."
    assert operation["parameters"][0]["name"] == "thing"
    assert operation["security"] == [{"basicAuth": []}]


def test_v1_operations_have_written_summaries_and_unique_ids(app: web.Application) -> None:
    doc = openapi.document(app)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))
    execute = doc["paths"]["/v1/processes/{processId}/execution"]["post"]
    assert execute["summary"].startswith("Execute a process")
    assert {"200", "201", "404"} <= set(execute["responses"])
    assert execute["parameters"][0] == {"name": "processId", "in": "path", "required": True,
                                        "schema": {"type": "string"}}


def test_modifying_calls_and_job_reads_ask_for_credentials(app: web.Application) -> None:
    doc = openapi.document(app)
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            wanted = method in ("post", "put", "patch", "delete") or path.startswith("/v1/jobs")
            assert ("security" in op) == wanted, (method, path)


async def test_each_process_s_input_and_output_schemas_are_in_the_document(client: Any) -> None:
    schemas = (await (await client.get("/v1/openapi.json")).json())["components"]["schemas"]
    sleep = schemas["sleep.execute"]["properties"]["inputs"]
    assert sleep["required"] == ["seconds"] and sleep["additionalProperties"] is False
    seconds = sleep["properties"]["seconds"]["oneOf"][0]
    assert seconds == {"type": "number", "minimum": 0, "maximum": 86400}
    assert schemas["sleep.results"]["properties"]["slept"]["oneOf"][0] == {"type": "number"}
    picture = schemas["picture.results"]["properties"]["png"]["oneOf"][0]
    assert picture["properties"]["value"]["contentMediaType"] == "image/png"
    assert schemas["echo.execute"]["properties"]["inputs"]["additionalProperties"] is True
