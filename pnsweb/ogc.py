"""OGC API - Processes - Part 1: Core, as pure functions of plain data.

Owns the standard's vocabulary (conformance classes, link relations, exception types) and the
JSON documents built from daemon records: landing page, conformance, process summaries and
descriptions, statusInfo and job lists, and the OGC exceptions (as
:class:`pnsweb.errors.ApiError`, which the app's one error middleware renders as RFC 7807
problem+json). It also owns the *process model* of a PTS: which OGC inputs and outputs a PTS
spec offers. It must do no I/O and never call the daemon: the views fetch, this module shapes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from pnsweb.errors import ApiError

CONF = "http://www.opengis.net/spec/ogcapi-processes-1/1.0/conf/"
CONFORMANCE = tuple(CONF + name for name in (
    "core", "ogc-process-description", "json", "job-list", "dismiss", "oas30",
))
REL = "http://www.opengis.net/def/rel/ogc/1.0/"
REL_CONFORMANCE = REL + "conformance"
REL_PROCESSES = REL + "processes"
REL_JOB_LIST = REL + "job-list"
REL_EXECUTE = REL + "execute"
REL_RESULTS = REL + "results"
EXC = "http://www.opengis.net/def/exceptions/ogcapi-processes-1/1.0/"
NO_SUCH_PROCESS = EXC + "no-such-process"
NO_SUCH_JOB = EXC + "no-such-job"
RESULT_NOT_READY = EXC + "result-not-ready"
TITLES = {
    NO_SUCH_PROCESS: "No such process",
    NO_SUCH_JOB: "No such job",
    RESULT_NOT_READY: "Result not ready",
}
JSON = "application/json"
JOB_CONTROL = ("sync-execute", "async-execute", "dismiss")
JOB_STATUSES = ("accepted", "running", "successful", "failed", "dismissed")


# -- problems --------------------------------------------------------------------------------

def ogc_error(
    status: int, type_uri: str, detail: str, *, headers: Mapping[str, str] | None = None,
) -> ApiError:
    """An error the app's error middleware renders as RFC 7807 problem+json with OGC's type."""
    return ApiError(status, detail, title=TITLES.get(type_uri), problem_type=type_uri,
                    headers=headers)


def no_such_process(name: str) -> ApiError:
    return ogc_error(404, NO_SUCH_PROCESS, f"there is no process {name[:64]!r}")


def no_such_job(job_id: str) -> ApiError:
    return ogc_error(404, NO_SUCH_JOB, f"there is no job {job_id[:64]!r}")


def result_not_ready(job_id: str, status: str) -> ApiError:
    return ogc_error(404, RESULT_NOT_READY, f"job {job_id} is {status}: no results yet")


def bad_request(detail: str) -> ApiError:
    return ApiError(400, detail)


# -- small parts -----------------------------------------------------------------------------

def rfc3339(timestamp: float | None) -> str | None:
    """A Unix time as RFC 3339 in UTC with milliseconds (``2024-05-01T12:00:00.000Z``)."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def link(href: str, rel: str, *, type_: str = JSON, title: str | None = None) -> dict[str, str]:
    out = {"href": href, "rel": rel, "type": type_}
    if title:
        out["title"] = title
    return out


# -- service documents -----------------------------------------------------------------------

def landing(base: str) -> dict[str, Any]:
    """The landing page; ``base`` is the absolute URL of ``/v1`` without a trailing slash."""
    return {
        "title": "PNS - Processing Node Server",
        "description": "OGC API - Processes over the PTS hosted by this node.",
        "links": [
            link(base, "self", title="this document"),
            link(f"{base}/openapi.json", "service-desc",
                 type_="application/vnd.oai.openapi+json;version=3.0", title="the API definition"),
            link(f"{base}/conformance", REL_CONFORMANCE, title="conformance classes"),
            link(f"{base}/conformance", "conformance", title="conformance classes"),
            link(f"{base}/processes", REL_PROCESSES, title="the processes"),
            link(f"{base}/jobs", REL_JOB_LIST, title="the jobs"),
        ],
    }


def conformance() -> dict[str, Any]:
    return {"conformsTo": list(CONFORMANCE)}


# -- the process model of a PTS --------------------------------------------------------------

@dataclass(frozen=True)
class Port:
    """One input or output of a process, with its JSON schema.

    An input takes ``min_occurs`` to ``max_occurs`` values; above one, several are given as a
    JSON array of values, each checked against ``schema`` (:mod:`pnsweb.inputschema`).
    """

    id: str
    title: str
    schema: Mapping[str, Any]
    required: bool = True
    max_occurs: int = 1

    @property
    def min_occurs(self) -> int:
        return 1 if self.required else 0

    # the key its compiled validator is kept under: worked out once per port
    @functools.cached_property
    def schema_text(self) -> str:
        return json.dumps(self.schema, sort_keys=True)


@dataclass(frozen=True)
class ProcessModel:
    """What a PTS looks like as an OGC process; derived from its spec by :func:`model_of`.

    Input mapping (OGC ``inputs`` -> the PTS input): process mode always gets the map of
    file name -> content; a PTS with exactly one declared input gets that input's value
    itself; otherwise it gets the inputs map. Output mapping: process mode has one output per
    declared output file (``outputs``, the map of every file, when the spec names none);
    inproc and worker PTS have the single output ``result``.
    """

    id: str
    title: str
    description: str
    version: str
    mode: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]

    @property
    def whole_input(self) -> bool:
        """True when the PTS takes the single input's value, not a map of inputs."""
        return self.mode != "process" and len(self.inputs) == 1

    # Read on every execution: worked out once per model (models are kept by the catalogue).
    @functools.cached_property
    def input_ids(self) -> tuple[str, ...]:
        return tuple(port.id for port in self.inputs)

    def output_ids(self) -> list[str]:
        return [port.id for port in self.outputs]


ANY: Mapping[str, Any] = {}
RESULT = Port("result", "the PTS's result", ANY)
ALL_FILES = Port("outputs", "every output file: name -> content", {"type": "object"})
_TEXT = {"type": "string"}
# Known callables (by entry, so a worker and an inproc PTS of one callable look alike).
CALLABLES: Mapping[str, tuple[Port, ...]] = {
    "pnsd.demo:echo": (Port("value", "any value, returned unchanged", ANY),),
    "pnsd.demo:sleep": (Port("seconds", "how long to sleep, in seconds",
                             {"type": "number", "minimum": 0, "maximum": 86400}),),
    "pnsd.demo:hello": (Port("name", "the name to greet", _TEXT, required=False),),
    "pnsd.demo:fail": (Port("input", "anything: the process always fails", ANY),),
    "pnsd.demo:testcalc": (
        Port("creator", "echoed back", _TEXT),
        Port("rootcause", "echoed back", _TEXT),
        Port("input", "a product: 'meta' (a map of parameters) and at least one dataset",
             {"type": "object", "required": ["meta"]}),
    ),
}
_GENERIC_INPUT = (Port("input", "the PTS's input, any JSON value", ANY),)


def model_of(spec: Mapping[str, Any]) -> ProcessModel:
    """The process model of one PTS spec (the ``spec`` of a ``pts.describe`` reply)."""
    mode = str(spec.get("mode", ""))
    if mode == "process":
        inputs = tuple(Port(name, f"the content of input file {name!r}", _TEXT, required=False)
                       for name in spec.get("inputs") or ())
        names = spec.get("outputs")
        outputs = (
            tuple(Port(name, f"the content of output file {name!r}", _TEXT) for name in names)
            if names is not None else (ALL_FILES,)
        )
    else:
        inputs = CALLABLES.get(str(spec.get("entry")), _GENERIC_INPUT)
        outputs = (RESULT,)
    return ProcessModel(
        id=str(spec.get("name", "")), title=str(spec.get("name", "")),
        description=str(spec.get("description") or ""), version=str(spec.get("version") or ""),
        mode=mode, inputs=inputs, outputs=outputs,
    )


def process_summary(summary: Mapping[str, Any], base: str) -> dict[str, Any]:
    """A processSummary from a ``pts.list`` item (or a model's fields)."""
    name = str(summary["name"])
    href = f"{base}/processes/{name}"
    return {
        "id": name, "title": name, "description": str(summary.get("description") or ""),
        "version": str(summary.get("version") or "0"),
        "jobControlOptions": list(JOB_CONTROL), "outputTransmission": ["value"],
        "links": [link(href, "self", title="process description"),
                  link(f"{href}/execution", REL_EXECUTE, title="execute")],
    }


def process_description(model: ProcessModel, base: str) -> dict[str, Any]:
    doc = process_summary({"name": model.id, "description": model.description,
                           "version": model.version}, base)
    doc["inputs"] = {port.id: {
        "title": port.title, "schema": dict(port.schema),
        "minOccurs": port.min_occurs, "maxOccurs": port.max_occurs,
    } for port in model.inputs}
    doc["outputs"] = {port.id: {"title": port.title, "schema": dict(port.schema)}
                      for port in model.outputs}
    return doc


def process_list(items: Iterable[Mapping[str, Any]], base: str) -> dict[str, Any]:
    return {
        "processes": [process_summary(item, base) for item in items],
        "links": [link(f"{base}/processes", "self")],
    }


# -- jobs -------------------------------------------------------------------------------------

def status_info(job: Mapping[str, Any], base: str, *, status: str | None = None) -> dict[str, Any]:
    """statusInfo of a daemon job record; ``status`` overrides the record's (dismiss)."""
    job_id = str(job["id"])
    href = f"{base}/jobs/{job_id}"
    state = status or str(job["status"])
    links = [link(href, "self", title="job status"),
             link(f"{href}/events", "monitor", type_="text/event-stream", title="job events")]
    if state == "successful":
        links.append(link(f"{href}/results", REL_RESULTS, title="job results"))
    info: dict[str, Any] = {
        "type": "process", "processID": job.get("pts"), "jobID": job_id, "status": state,
        "message": str(job.get("message") or ""), "progress": int(job.get("progress") or 0),
    }
    for key in ("created", "started", "finished", "updated"):
        stamp = rfc3339(job.get(key))
        if stamp is not None:
            info[key] = stamp
    info["links"] = links
    return info


def job_list(
    jobs: Iterable[Mapping[str, Any]], base: str, *, total: int, page: Mapping[str, str],
    limit: int, offset: int,
) -> dict[str, Any]:
    """The job list with self/next/prev links; ``page`` holds the other query parameters."""
    def page_link(rel: str, at: int) -> dict[str, str]:
        query = urlencode({**page, "limit": limit, "offset": at})
        return link(f"{base}/jobs?{query}", rel)

    links = [page_link("self", offset)]
    if offset + limit < total:
        links.append(page_link("next", offset + limit))
    if offset > 0:
        links.append(page_link("prev", max(0, offset - limit)))
    return {"jobs": [status_info(job, base) for job in jobs], "numberMatched": total,
            "links": links}
