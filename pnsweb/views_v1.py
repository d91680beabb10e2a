"""The /v1 service and process views: landing page, conformance, processes, execution.

Owns the HTTP side of OGC API - Processes for processes: each view asks the daemon through
``app[CLIENT]`` and shapes the reply with :mod:`pnsweb.ogc`. Execution is synchronous unless
the request says ``Prefer: respond-async`` (or the older body field ``"mode": "async"``). A
synchronous result is answered ``raw`` by default, as the standard's ``response`` default says:
the single output's value as the body, with its media type (JSON; bytes and text as the output
declares); with several outputs selected, ``raw`` falls back to the results document (multipart
is not offered); outputs all sent by reference are 204 with a ``Link`` header each. An output
by reference (``transmissionMode: reference``) is a link to ``/v1/jobs/{id}/results/{name}``.
The inputs go to the daemon as they are (binary ones decoded, :mod:`pnsweb.ogcvalues`): the
daemon checks them against the declared schemas and its refusal is the 400 that names each
failure. The job belongs to the authenticated user (sent to the daemon as ``owner``). An
asynchronous submission is answered as soon as the daemon recorded it (201), or refused at once
when the PTS's queue is full (429 with ``Retry-After``, nothing recorded); an
``Idempotency-Key`` header makes a repeat return the user's first job with that key instead of
running again (synchronous executions refuse the header: a run that is not recorded first cannot be
deduplicated). Errors the daemon reports (busy, timeout, the PTS failing) go to the app's error
middleware as :class:`protocols.errors.RemoteError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from aiohttp import web

from pnsweb import ogc
from pnsweb.auth import require_user
from pnsweb.keys import CATALOG, CLIENT, SETTINGS
from pnsweb.ogcvalues import (
    REFERENCE,
    PtsInput,
    input_refusal,
    outputs_of,
    pts_input,
    reference,
    results_document,
    selection,
)
from pnsweb.views_v1_io import META_TIMEOUT, base_of, read_json, send_json
from pnsweb.views_v1_results import results_href, send_value, stream_results
from protocols.errors import ErrorCode, RemoteError
from protocols.uploads import call_uploading

RESPONSES = ("raw", "document")
IDEMPOTENCY_KEY = "Idempotency-Key"
MAX_KEY = 255      # characters of an Idempotency-Key (the daemon's limit too)


async def landing(request: web.Request) -> web.StreamResponse:
    """The landing page: links to the API definition, conformance, processes and jobs."""
    return await send_json(request, ogc.landing(base_of(request)))


async def conformance(request: web.Request) -> web.StreamResponse:
    """The conformance classes this API implements."""
    return await send_json(request, ogc.conformance())


async def processes(request: web.Request) -> web.StreamResponse:
    """Every PTS as a process summary."""
    reply = await request.app[CLIENT].call("pts.list", {}, timeout=META_TIMEOUT)
    return await send_json(request, ogc.process_list(reply["pts"], base_of(request)))


async def process(request: web.Request) -> web.StreamResponse:
    """One process description, derived from the PTS spec."""
    name = request.match_info["processId"]
    model = await request.app[CATALOG].model(request.app[CLIENT], name)
    return await send_json(request, ogc.process_description(model, base_of(request)))


async def execute(request: web.Request) -> web.StreamResponse:
    """Run a process: synchronously (200 with results) or, asked to, as a job (201)."""
    user = await require_user(request, admin=False)
    app = request.app
    name = request.match_info["processId"]
    model = await app[CATALOG].model(app[CLIENT], name)
    body = await read_json(request, limit=app[SETTINGS].max_body)
    order = ExecuteOrder.parse(body, request.headers.get("Prefer", ""), model)
    key = _idempotency_key(request, asynchronous=order.asynchronous)
    given = pts_input(model, body.get("inputs"))
    ask: dict[str, Any] = {"pts": model.id, "input": given.data, "owner": user.name}
    if order.asynchronous:
        if key is not None:
            ask["idempotency_key"] = key
        return await _submit(request, model, ask, given)
    return await _run(request, model, ask, order, given)


def _idempotency_key(request: web.Request, *, asynchronous: bool) -> str | None:
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is None:
        return None
    if not asynchronous:
        raise ogc.bad_request(f"{IDEMPOTENCY_KEY} is for asynchronous execution "
                              "(Prefer: respond-async): a synchronous run is not deduplicated")
    if not 0 < len(key) <= MAX_KEY or not key.isprintable():
        raise ogc.bad_request(f"{IDEMPOTENCY_KEY} must be 1 to {MAX_KEY} printable characters")
    return key


class ExecuteOrder(NamedTuple):
    """The validated options of an execute request; ``chosen``: output id -> transmission."""

    asynchronous: bool
    response: str
    chosen: dict[str, str]
    prefer_sync: bool

    @classmethod
    def parse(cls, body: Any, prefer: str, model: ogc.ProcessModel) -> ExecuteOrder:
        if not isinstance(body, dict):     # a JSON object (and a dict check is cheaper)
            raise ogc.bad_request("the execute request must be a JSON object with 'inputs'")
        response = body.get("response", "raw")
        if response not in RESPONSES:
            raise ogc.bad_request("'response' must be 'raw' or 'document'")
        mode = body.get("mode", "auto")
        if mode not in ("auto", "sync", "async"):
            raise ogc.bad_request("'mode' must be 'auto', 'sync' or 'async'")
        tokens = {token.strip().split("=")[0].lower() for token in prefer.split(",")} \
            if prefer else _NO_TOKENS
        asynchronous = mode == "async" or (mode == "auto" and "respond-async" in tokens)
        # Validated before running: a bad request must not cost a run.
        chosen = selection(model, body.get("outputs"),
                           kept=asynchronous or model.sync_results_kept)
        return cls(asynchronous=asynchronous, response=response, chosen=chosen,
                   prefer_sync="respond-sync" in tokens)


_NO_TOKENS: frozenset[str] = frozenset()


async def _submit(request: web.Request, model: ogc.ProcessModel, ask: dict[str, Any],
                  given: PtsInput) -> web.StreamResponse:
    reply = await _daemon(request, model.id, "submit", ask, given, timeout=META_TIMEOUT)
    base = base_of(request)
    job = reply["job"]
    headers = {"Location": f"{base}/jobs/{job['id']}", "Preference-Applied": "respond-async"}
    return await send_json(request, ogc.status_info(job, base), status=201, headers=headers)


async def _run(
    request: web.Request, model: ogc.ProcessModel, ask: dict[str, Any], order: ExecuteOrder,
    given: PtsInput,
) -> web.StreamResponse:
    base = base_of(request)    # once: the monitor link, and the results' when there are any
    try:
        reply = await _daemon(request, model.id, "run", ask, given,
                              timeout=request.app[SETTINGS].call_timeout)
    except RemoteError as exc:
        job_id = exc.details.get("job")
        if exc.code != ErrorCode.TOO_LARGE or not isinstance(job_id, str):
            raise
        # recorded, but over the daemon's message limit: streamed from the store instead
        return await stream_results(
            request, request.app[CLIENT], job_id, model, owner=ask["owner"],
            chosen=order.chosen, raw=order.response == "raw",
            headers=_sync_headers(base, job_id, order))
    job_id = reply["job"]
    headers = _sync_headers(base, job_id, order)
    outputs = outputs_of(model, reply["result"])
    if order.response == "raw" and set(order.chosen.values()) == {REFERENCE}:
        return _links(order.chosen, model, results_href(base, job_id), headers)
    if order.response == "raw" and len(order.chosen) == 1:
        [(key, _mode)] = order.chosen.items()
        port, value = model.output_ports[key], outputs[key]
        return await send_value(request, port, value, headers=headers)
    document = results_document(model, outputs, order.chosen, results_href(base, job_id))
    return await send_json(request, document, headers=headers)


def _links(chosen: dict[str, str], model: ogc.ProcessModel, href: Callable[[str], str],
           headers: dict[str, str]) -> web.StreamResponse:
    """A raw response of outputs by reference: no body, a Link header per output."""
    response = web.Response(status=204, headers=headers)
    for key in chosen:
        link = reference(model.output_ports[key], href(key))
        response.headers.add("Link", f'<{link["href"]}>; rel="{ogc.REL_RESULTS}"; '
                                     f'type="{link["type"]}"; title="{key}"')
    return response


def _sync_headers(base: str, job_id: str, order: ExecuteOrder) -> dict[str, str]:
    headers = {"Link": f'<{base}/jobs/{job_id}>; rel="monitor"'}
    if order.prefer_sync:
        headers["Preference-Applied"] = "respond-sync"
    return headers


async def _daemon(
    request: web.Request, name: str, op: str, body: Any, given: PtsInput, *, timeout: float,
) -> Any:
    """One daemon call for process ``name``; its disappearance is OGC's no-such-process, its
    refusal of the input a 400 naming each failure."""
    try:
        # an input over the daemon's message limit goes in parts first (protocols.uploads)
        return await call_uploading(request.app[CLIENT], op, body, timeout)
    except RemoteError as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            raise ogc.no_such_process(name) from exc
        refusal = input_refusal(exc, given, name)
        if refusal is not None:
            raise refusal from exc
        raise
