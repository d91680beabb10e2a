"""The OpenAPI 3.0 document of the whole app, generated from its router at request time.

Owns ``/v1/openapi.json``. Paths and methods come from the root app's ``router.routes()``
(canonical resource paths, every sub-app's included), so the document cannot drift from the
routes: a route added anywhere appears
with its handler's docstring as summary, and the /v1 and operations routes get hand-written
summaries, parameters and responses here. Each process's execute request and results document
get a schema of their own (``<id>.execute``, ``<id>.results``), built from the inputs and
outputs its PTS declares: the view asks the daemon for them (``pts.list``, and the catalogue's
descriptions); :func:`document` itself calls nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import hdrs, web

from pnsweb import ogc
from pnsweb.errors import ApiError
from pnsweb.keys import CATALOG, CLIENT
from pnsweb.links import base_url
from pnsweb.views_v1_io import META_TIMEOUT, send_json

PARAM_RE = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")
ANY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MODIFYING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JOBS = "/v1/jobs"
_JSON = {"application/json": {"schema": {"type": "object"}}}
_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/exception"}}}


def _reply(text: str, content: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"description": text, "content": dict(content or _JSON)}


_NOT_FOUND_JOB = _reply("no such job (`no-such-job`)", _PROBLEM)
_NOT_FOUND_PROCESS = _reply("no such process (`no-such-process`)", _PROBLEM)
_QUERY = {"name": "", "in": "query", "required": False, "schema": {"type": "string"}}

# (method, canonical path) -> summary and the parts of the operation beyond the generic ones.
OPERATIONS: Mapping[tuple[str, str], dict[str, Any]] = {
    ("GET", "/v1"): {"summary": "Landing page", "responses": {"200": _reply("links")}},
    ("GET", "/v1/"): {"summary": "Landing page (trailing slash)",
                      "responses": {"200": _reply("links")}},
    ("GET", "/v1/conformance"): {"summary": "Conformance classes",
                                 "responses": {"200": _reply("conformsTo")}},
    ("GET", "/v1/openapi.json"): {"summary": "This OpenAPI document",
                                  "responses": {"200": _reply("OpenAPI 3.0")}},
    ("GET", "/v1/processes"): {"summary": "List the processes (one per PTS)",
                               "responses": {"200": _reply("process summaries")}},
    ("GET", "/v1/processes/{processId}"): {
        "summary": "Describe a process: inputs and outputs with JSON schemas",
        "responses": {"200": _reply("process description"), "404": _NOT_FOUND_PROCESS}},
    ("POST", "/v1/processes"): {
        "summary": "Deploy a process (Part 2): a new PTS from its spec; administrators only",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/deploy"}}}},
        "responses": {
            "201": {**_reply("the new process's summary"), "headers": {
                "Location": {"schema": {"type": "string"}, "description": "the process"}}},
            "400": _reply("bad spec, or the new PTS failed to start, init or self-test",
                          _PROBLEM),
            "403": _reply("not an administrator", _PROBLEM),
            "409": _reply("the name exists, or another change is under way", _PROBLEM)}},
    ("PUT", "/v1/processes/{processId}"): {
        "summary": "Replace a process (Part 2): hot-swap a new version; administrators only",
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/deploy"}}}},
        "responses": {
            "204": {"description": "swapped: new runs go to the new version"},
            "400": _reply("bad spec, or the new version failed (the old keeps serving)",
                          _PROBLEM),
            "403": _reply("not an administrator", _PROBLEM), "404": _NOT_FOUND_PROCESS,
            "409": _reply("another change of this process is under way", _PROBLEM)}},
    ("DELETE", "/v1/processes/{processId}"): {
        "summary": "Undeploy a process (Part 2): its runs drain, then it is gone; admins only",
        "responses": {"204": {"description": "undeployed"},
                      "403": _reply("not an administrator", _PROBLEM),
                      "404": _NOT_FOUND_PROCESS,
                      "409": _reply("another change is under way, or the process is not "
                                    "deployed in pts.d", _PROBLEM)}},
    ("POST", "/v1/processes/{processId}/execution"): {
        "summary": "Execute a process: synchronous unless `Prefer: respond-async`",
        "description": "The body of process P follows the schema `P.execute` and its results "
                       "document `P.results` (components).",
        "parameters": [{**_QUERY, "name": "Prefer", "in": "header"},
                       {**_QUERY, "name": "Idempotency-Key", "in": "header"}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/execute"}}}},
        "responses": {
            "200": {"description": "results: raw (default) or a document keyed by output id",
                    "content": {"application/json": {}, "application/octet-stream": {}}},
            "201": {**_reply("the job's statusInfo"), "headers": {
                "Location": {"schema": {"type": "string"}, "description": "the job"}}},
            "400": _reply("bad inputs", _PROBLEM), "404": _NOT_FOUND_PROCESS,
            "413": _reply("body over the limit", _PROBLEM),
            "429": _reply("the process's queue is full: nothing recorded, see Retry-After",
                          _PROBLEM)}},
    ("GET", "/v1/jobs"): {
        "summary": "List the caller's jobs (an administrator's: everybody's), newest first",
        "parameters": [{**_QUERY, "name": name} for name in
                       ("limit", "offset", "processID", "status")],
        "responses": {"200": _reply("jobs (statusInfo) and paging links")}},
    ("GET", "/v1/jobs/{jobId}"): {"summary": "A job's status (statusInfo)",
                                  "responses": {"200": _reply("statusInfo"),
                                                "404": _NOT_FOUND_JOB}},
    ("DELETE", "/v1/jobs/{jobId}"): {
        "summary": "Dismiss a job: cancel it if unfinished, then delete it and its results",
        "responses": {"200": _reply("statusInfo, status dismissed"), "404": _NOT_FOUND_JOB}},
    ("GET", "/v1/jobs/{jobId}/results"): {
        "summary": "A successful job's results, keyed by output id",
        "responses": {"200": _reply("results"), "404": _reply(
            "no such job, or `result-not-ready`", _PROBLEM)}},
    ("GET", "/v1/jobs/{jobId}/events"): {
        "summary": "A job's progress as Server-Sent Events (resume with Last-Event-ID)",
        "parameters": [{**_QUERY, "name": "Last-Event-ID", "in": "header"}],
        "responses": {"200": {"description": "id = seq, event = status|progress|log",
                              "content": {"text/event-stream": {}}},
                      "404": _NOT_FOUND_JOB}},
    ("GET", "/healthz"): {"summary": "Liveness: the web process is up",
                          "responses": {"200": _reply('{"status": "ok"}')}},
    ("GET", "/readyz"): {"summary": "Readiness: the daemon answers and every PTS is ready",
                         "responses": {"200": _reply("ready"),
                                       "503": _reply("not ready, naming each degraded PTS")}},
    ("GET", "/metrics"): {"summary": "Prometheus metrics (text exposition 0.0.4)",
                          "responses": {"200": {"description": "metrics",
                                                "content": {"text/plain": {}}}}},
}

COMPONENTS: Mapping[str, Any] = {
    "securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}},
    "schemas": {
        "exception": {"type": "object", "required": ["type"], "properties": {
            "type": {"type": "string"}, "title": {"type": "string"},
            "status": {"type": "integer"}, "detail": {"type": "string"}}},
        "deploy": {"type": "object", "required": ["spec"], "properties": {
            "name": {"type": "string", "description": "the process id (deploy only)"},
            "spec": {"type": "object", "additionalProperties": True,
                     "description": "the keys of a [pts.NAME] table, e.g. mode, entry, "
                                    "version, selftest"}}},
        "execute": {"type": "object", "properties": {
            "inputs": {"type": "object", "additionalProperties": True},
            "outputs": {"type": "object", "additionalProperties": True},
            "response": {"type": "string", "enum": ["raw", "document"], "default": "raw"}}},
    },
}


CONSOLE = "/console"


async def view(request: web.Request) -> web.StreamResponse:
    """The OpenAPI 3.0 document of every route."""
    app = request.app
    listing = await app[CLIENT].call("pts.list", {}, timeout=META_TIMEOUT)
    models = []
    for item in listing["pts"]:
        try:
            models.append(await app[CATALOG].model(app[CLIENT], str(item["name"])))
        except ApiError:      # undeployed since the list was made
            continue
    root = request.match_info.apps[0]      # the whole app, not the face serving this view
    return await send_json(request, document(root, server=base_url(request), models=models))


def document(app: web.Application, *, server: str = "",
             models: Iterable[ogc.ProcessModel] = ()) -> dict[str, Any]:
    """The OpenAPI document for every route registered on ``app`` and its sub-apps (whose
    routes aiohttp lists with the root's, by their full paths), except the operator console's
    (a page and the calls it makes for itself, signed in by its own session, not an API), with
    the execute request and results schemas of each process in ``models`` (``<id>.execute``,
    ``<id>.results``)."""
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        if route.resource is None or route.resource.canonical.startswith(CONSOLE):
            continue
        path = route.resource.canonical
        methods = ANY_METHODS if route.method == hdrs.METH_ANY else (route.method,)
        for method in methods:
            paths.setdefault(path, {})[method.lower()] = operation(route, method, path)
    return {
        "openapi": "3.0.3",
        "info": {"title": "PNS - Processing Node Server", "version": "1.0.0",
                 "description": "OGC API - Processes (/v1), the reference PNS API (/v0.6) "
                                "and operations endpoints."},
        "servers": [{"url": server or "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {**COMPONENTS, "schemas": {**COMPONENTS["schemas"],
                                                 **process_schemas(models)}},
        "externalDocs": {"url": ogc.CONF.rsplit("/conf/", 1)[0]},
    }


def process_schemas(models: Iterable[ogc.ProcessModel]) -> dict[str, Any]:
    """``<id>.execute`` (the request body) and ``<id>.results`` (the results document) of
    each process, from the schemas its PTS declares."""
    schemas: dict[str, Any] = {}
    for model in models:
        schemas[f"{model.id}.execute"] = {
            "type": "object", "description": f"execute {model.id}: {model.title}",
            "properties": {
                "inputs": _inputs_schema(model),
                "outputs": {"type": "object", "properties": {
                    port.id: {"type": "object", "properties": {"transmissionMode": {
                        "type": "string", "enum": list(ogc.TRANSMISSION)}}}
                    for port in model.outputs}, "additionalProperties": False},
                "response": {"type": "string", "enum": ["raw", "document"],
                             "default": "raw"}}}
        schemas[f"{model.id}.results"] = {
            "type": "object", "description": f"the results document of {model.id}",
            "properties": {port.id: _output_schema(port) for port in model.outputs}}
    return schemas


def _inputs_schema(model: ogc.ProcessModel) -> dict[str, Any]:
    if model.inputs is None:      # it declares none: any inputs
        return {"type": "object", "additionalProperties": True}
    properties = {}
    for port in model.inputs:
        one = _qualifiable(port)
        many = {"type": "array", "items": one, "minItems": port.min_occurs}
        if port.max_occurs is not None:
            many["maxItems"] = port.max_occurs
        properties[port.id] = one if port.max_occurs == 1 else {"oneOf": [one, many]}
    required = [port.id for port in model.inputs if port.min_occurs > 0]
    return {"type": "object", "properties": properties, "required": required,
            "additionalProperties": False}


def _qualifiable(port: ogc.Port) -> dict[str, Any]:
    """One value of an input: the value itself, or a qualified value holding it."""
    plain = port.described_schema()
    qualified = {"type": "object", "required": ["value"], "properties": {
        "value": plain, "mediaType": {"type": "string"}, "encoding": {"type": "string"}}}
    return {"oneOf": [plain, qualified]} if plain else {}


def _output_schema(port: ogc.Port) -> dict[str, Any]:
    link = {"type": "object", "required": ["href"], "properties": {
        "href": {"type": "string"}, "type": {"type": "string"}, "title": {"type": "string"}}}
    value = port.described_schema()
    if port.binary:
        value = {"type": "object", "required": ["value"], "properties": {
            "value": value, "mediaType": {"type": "string"}, "encoding": {"type": "string"}}}
    return {"oneOf": [value, link]} if value else {}


def operation(route: web.AbstractRoute, method: str, path: str) -> dict[str, Any]:
    known = OPERATIONS.get(("GET" if method == "HEAD" else method, path), {})
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
              for name in PARAM_RE.findall(path)]
    op: dict[str, Any] = {
        "summary": known.get("summary") or _summary_of(route) or f"{method} {path}",
        "operationId": _operation_id(method, path),
        "tags": [_tag(path)],
        "responses": known.get("responses") or {"default": {"description": "a JSON reply"}},
    }
    if method == "HEAD":
        op["responses"] = {"200": {"description": "the GET reply's headers"}}
    if params or known.get("parameters"):
        op["parameters"] = params + list(known.get("parameters", []))
    if "requestBody" in known:
        op["requestBody"] = known["requestBody"]
    if method in MODIFYING or path.startswith(JOBS):    # a job is its creator's
        op["security"] = [{"basicAuth": []}]
    return op


def _summary_of(route: web.AbstractRoute) -> str:
    doc = getattr(route.handler, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _operation_id(method: str, path: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
    if len(path) > 1 and path.endswith("/"):
        slug += "_slash"
    return f"{method.lower()}_{slug}"


def _tag(path: str) -> str:
    first = path.strip("/").split("/", 1)[0]
    return first if first in ("v1", "v0.6") else "operations"
