"""The /v1 job views: job list, status, dismiss, results and the Server-Sent Events stream.

Owns the HTTP side of OGC API - Processes for jobs. Every job route needs credentials (401
without): a user reaches the jobs they created, an administrator everybody's; the daemon
filters by the ``owner`` sent with each call. A malformed or unknown job id, and another user's
job, is OGC's ``no-such-job`` (404: a job's existence is not revealed); results of an
unfinished job are ``result-not-ready`` (404); one output is served on its own, with its media
type, at ``/v1/jobs/{id}/results/{name}`` (an unknown name is 404); the results of a failed or
dismissed job are the daemon's error, rendered by the app's error middleware. Dismissing a job
deletes it (the daemon cancels an unfinished one first, politely, then kills): its record and
results are gone, 404 afterwards, as the standard's dismiss class describes. The event stream
relays the daemon's ``job.watch`` (resuming after ``Last-Event-ID``), sends a comment line as
heartbeat when idle and ends when the job ends.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from pnsweb import ogc
from pnsweb.auth import require_user
from pnsweb.errors import ApiError
from pnsweb.keys import CATALOG, CLIENT, DaemonClient
from pnsweb.ogcvalues import VALUE, outputs_of, results_document
from pnsweb.views_v1_io import META_TIMEOUT, base_of, job_id_of, send_json
from pnsweb.views_v1_results import stream_results
from protocols.errors import ClientTimeout, ErrorCode, PnsError, RemoteError

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
HEARTBEAT = 15.0     # seconds of silence before the event stream sends a comment line
WATCH_WAIT = 60.0    # longest wait for the daemon's next event (it ends idle watches at 30 s)
QUEUE = 256
_GONE = (ErrorCode.NOT_FOUND, ErrorCode.BAD_REQUEST)   # bad_request: the daemon refused the id


async def jobs(request: web.Request) -> web.StreamResponse:
    """The caller's jobs (an administrator's: everybody's), newest first, paged with ``limit``
    and ``offset``."""
    owner = await reader(request)
    query = request.query
    limit = _integer(query.get("limit"), "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _integer(query.get("offset"), "offset", 0, 0, 2**62)
    ask: dict[str, Any] = {"limit": limit, "offset": offset, **_as(owner)}
    page: dict[str, str] = {}
    if "processID" in query:
        ask["pts"] = page["processID"] = query["processID"]
    if "status" in query:
        if query["status"] not in ogc.JOB_STATUSES:
            raise ogc.bad_request(f"status must be one of {', '.join(ogc.JOB_STATUSES)}")
        ask["status"] = page["status"] = query["status"]
    reply = await request.app[CLIENT].call("job.list", ask, timeout=META_TIMEOUT)
    return await send_json(request, ogc.job_list(
        reply["jobs"], base_of(request), total=int(reply["total"]), page=page,
        limit=limit, offset=offset))


async def job(request: web.Request) -> web.StreamResponse:
    """A job's statusInfo."""
    owner = await reader(request)
    record = await job_record(request.app[CLIENT], job_id_of(request), owner)
    return await send_json(request, ogc.status_info(record, base_of(request)))


async def dismiss(request: web.Request) -> web.StreamResponse:
    """Dismiss a job: delete it with its results (the daemon cancels it first if unfinished)."""
    owner = await reader(request)
    job_id = job_id_of(request)
    record = (await _job_call(request.app[CLIENT], "job.delete", job_id, owner))["job"]
    message = record.get("message") if record["status"] == "dismissed" else "dismissed"
    shown = {**record, "message": message}
    return await send_json(request, ogc.status_info(shown, base_of(request), status="dismissed"))


async def results(request: web.Request) -> web.StreamResponse:
    """The results document of a successful job (output id -> value); a result over the
    daemon's message limit is streamed from the store, chunk by chunk."""
    owner = await reader(request)
    job_id = job_id_of(request)
    client = request.app[CLIENT]
    try:
        reply = await _job_call(client, "job.result", job_id, owner)
    except RemoteError as exc:
        _raise_not_ready(exc, job_id)
        if exc.code != ErrorCode.TOO_LARGE:
            raise
        record = await job_record(client, job_id, owner)
        model = await _model_of(request, str(record["pts"]))
        return await stream_results(request, client, job_id, model, owner=owner)
    model = await _model_of(request, str(reply["job"]["pts"]))
    return await send_json(request, results_document(model, outputs_of(model, reply["result"])))


async def output(request: web.Request) -> web.StreamResponse:
    """One output of a successful job, as its media type (where an output sent by reference
    points); read from the store chunk by chunk."""
    owner = await reader(request)
    job_id = job_id_of(request)
    name = request.match_info["outputId"]
    client = request.app[CLIENT]
    record = await job_record(client, job_id, owner)
    model = await _model_of(request, str(record["pts"]))
    if name not in model.output_ports:
        raise ApiError(404, f"job {job_id} has no output {name[:64]!r} "
                            f"(its outputs: {', '.join(model.output_ids()) or 'none'})")
    try:
        return await stream_results(request, client, job_id, model, owner=owner,
                                    chosen={name: VALUE}, raw=True)
    except RemoteError as exc:
        if exc.code in _GONE:
            raise ogc.no_such_job(job_id) from exc
        _raise_not_ready(exc, job_id)
        raise


def _raise_not_ready(exc: RemoteError, job_id: str) -> None:
    """OGC's ``result-not-ready`` when the daemon says the job has no result yet."""
    if exc.code == ErrorCode.NOT_READY:
        status = str(exc.details.get("status") or "not finished")
        raise ogc.result_not_ready(job_id, status) from exc


async def _model_of(request: web.Request, name: str) -> ogc.ProcessModel:
    try:
        return await request.app[CATALOG].model(request.app[CLIENT], name)
    except ApiError:     # the PTS is gone since: show the result as its single output
        return ogc.model_of({"spec": {"name": name},
                             "interface": {"outputs": {"result": {"path": []}}}})


async def reader(request: web.Request) -> str | None:
    """Who the caller acts as on jobs: their own name, or None for an administrator (all jobs).
    Without valid credentials, 401."""
    user = await require_user(request, admin=False)
    return None if user.admin else user.name


def _as(owner: str | None) -> dict[str, str]:
    """The ``owner`` member of a daemon call: absent for an administrator."""
    return {} if owner is None else {"owner": owner}


async def job_record(client: DaemonClient, job_id: str, owner: str | None) -> dict[str, Any]:
    record: dict[str, Any] = (await _job_call(client, "job.status", job_id, owner))["job"]
    return record


async def _job_call(client: DaemonClient, op: str, job_id: str, owner: str | None) -> Any:
    try:
        return await client.call(op, {"job": job_id, **_as(owner)}, timeout=META_TIMEOUT)
    except RemoteError as exc:
        if exc.code in _GONE:
            raise ogc.no_such_job(job_id) from exc
        raise


def _integer(text: str | None, name: str, default: int, low: int, high: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ogc.bad_request(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ogc.bad_request(f"{name} must be from {low} to {high}")
    return value


# -- Server-Sent Events -----------------------------------------------------------------------

async def events(request: web.Request) -> web.StreamResponse:
    """The job's events as text/event-stream: ``id`` = seq, ``event`` = kind, ``data`` = JSON."""
    owner = await reader(request)
    job_id = job_id_of(request)
    after = _integer(request.headers.get("Last-Event-ID"), "Last-Event-ID", 0, 0, 2**62)
    client = request.app[CLIENT]
    await job_record(client, job_id, owner)   # a 404 must come before the stream starts
    return await stream_events(request, client, {"job": job_id, **_as(owner)}, after)


async def stream_events(request: web.Request, client: DaemonClient, ask: dict[str, Any],
                        after: int) -> web.StreamResponse:
    """Answer with the events of the job ``ask`` names (with its ``owner``, if any) after
    event ``after``, as text/event-stream, until the job ends or the client goes away (the
    /v1 events route and the console's job page both serve this)."""
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE)
    async with asyncio.TaskGroup() as group:
        pump = group.create_task(_pump(client, ask, after, queue))
        try:
            await _relay(response, queue)
        except ConnectionResetError:
            pass          # the client went away; the job carries on
        finally:
            pump.cancel()
    return response


async def _pump(
    client: DaemonClient, ask: dict[str, Any], after: int,
    queue: asyncio.Queue[dict[str, Any] | None],
) -> None:
    """Daemon events into ``queue``, watching again after idle ends; None marks the end."""
    while True:
        try:
            async for event in client.stream("job.watch", {**ask, "after": after},
                                             timeout=WATCH_WAIT):
                after = max(after, int(event.get("seq", after)))
                await queue.put(event)
        except RemoteError as exc:
            if exc.code == ErrorCode.TIMEOUT:     # the daemon ends idle watches: watch again
                continue
            await queue.put({"kind": "error", "code": exc.code, "message": exc.message})
        except ClientTimeout:
            continue
        except PnsError as exc:
            await queue.put({"kind": "error", "code": "unavailable", "message": str(exc)})
        break
    await queue.put(None)


async def _relay(response: web.StreamResponse,
                 queue: asyncio.Queue[dict[str, Any] | None]) -> None:
    while True:
        try:
            event = await asyncio.wait_for(queue.get(), HEARTBEAT)
        except TimeoutError:
            await response.write(b": keep-alive\n\n")
            continue
        if event is None:
            break
        await response.write(sse_frame(event))
    await response.write_eof()


def sse_frame(event: dict[str, Any]) -> bytes:
    """One event in the text/event-stream format (the data is one JSON line)."""
    lines = []
    if "seq" in event:
        lines.append(f"id: {event['seq']}")
    lines.append(f"event: {event.get('kind', 'message')}")
    lines.append("data: " + json.dumps(event, ensure_ascii=False, default=str))
    return ("\n".join(lines) + "\n\n").encode()
