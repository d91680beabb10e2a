"""OGC API - Processes - Part 1: Core, as pure functions of plain data.

Owns the standard's vocabulary (conformance classes, link relations, exception types) and the
JSON documents built from daemon records: landing page, conformance, process summaries and
descriptions, statusInfo and job lists, and the OGC exceptions (as
:class:`pnsweb.errors.ApiError`, which the app's one error middleware renders as RFC 7807
problem+json). It also owns the *process model* of a PTS: its inputs and outputs as the PTS
declares them in its spec (the ``interface`` of a ``pts.describe`` reply); it knows no PTS by
name. It must do no I/O and never call the daemon: the views fetch, this module shapes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
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
TRANSMISSION = ("value", "reference")
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
    """One input or output of a process, as the PTS declares it (``pts.describe``).

    ``max_occurs`` None is unbounded. ``binary`` values are bytes in the daemon: JSON carries
    them as base64 (a qualified value). ``path`` (outputs) is where the output's value is in
    the run's result: the keys to follow.
    """

    id: str
    title: str = ""
    description: str = ""
    schema: Mapping[str, Any] = field(default_factory=dict)
    min_occurs: int = 1
    max_occurs: int | None = 1
    binary: bool = False
    path: tuple[str, ...] = ()

    @property
    def media_type(self) -> str | None:
        value = self.schema.get("contentMediaType")
        return value if isinstance(value, str) else None

    def described_schema(self) -> dict[str, Any]:
        """The schema a JSON client programs against: a binary value is base64 text."""
        if self.binary:
            return {"type": "string", "contentEncoding": "base64", **self.schema}
        return dict(self.schema)

    @classmethod
    def of(cls, name: str, table: Mapping[str, Any]) -> Port:
        schema = table.get("schema")
        high = table.get("maxOccurs", 1)
        return cls(id=name, title=str(table.get("title") or name),
                   description=str(table.get("description") or ""),
                   schema=schema if isinstance(schema, Mapping) else {},
                   min_occurs=int(table.get("minOccurs", 1)),
                   max_occurs=None if high == "unbounded" else int(high),
                   binary=bool(table.get("binary")),
                   path=tuple(str(key) for key in table.get("path") or ()))


@dataclass(frozen=True)
class ProcessModel:
    """A PTS as an OGC process, from its ``pts.describe`` reply (:func:`model_of`).

    ``inputs`` None: the PTS declares none and takes any. ``sync_results_kept``: the daemon
    keeps a synchronous run's result (so an output may be sent by reference).
    """

    id: str
    title: str
    description: str
    version: str
    keywords: tuple[str, ...]
    inputs: tuple[Port, ...] | None
    outputs: tuple[Port, ...]
    sync_results_kept: bool = True

    # Read on every execution: worked out once per model (models are kept by the catalogue).
    @functools.cached_property
    def input_ports(self) -> dict[str, Port]:
        return {port.id: port for port in self.inputs or ()}

    @functools.cached_property
    def output_ports(self) -> dict[str, Port]:
        return {port.id: port for port in self.outputs}

    def output_ids(self) -> list[str]:
        return [port.id for port in self.outputs]


def model_of(reply: Mapping[str, Any]) -> ProcessModel:
    """The process model in a ``pts.describe`` reply (its ``spec`` and ``interface``)."""
    spec = reply.get("spec") or {}
    interface = reply.get("interface") or {}
    inputs = interface.get("inputs")
    name = str(spec.get("name", ""))
    return ProcessModel(
        id=name, title=str(interface.get("title") or name),
        description=str(spec.get("description") or ""), version=str(spec.get("version") or ""),
        keywords=tuple(str(k) for k in interface.get("keywords") or ()),
        inputs=None if inputs is None else tuple(Port.of(k, v) for k, v in inputs.items()),
        outputs=tuple(Port.of(k, v) for k, v in (interface.get("outputs") or {}).items()),
        sync_results_kept=bool(reply.get("sync_results_kept", True)),
    )


def process_summary(summary: Mapping[str, Any], base: str) -> dict[str, Any]:
    """A processSummary from a ``pts.list`` item (or a model's fields)."""
    name = str(summary["name"])
    href = f"{base}/processes/{name}"
    doc: dict[str, Any] = {
        "id": name, "title": str(summary.get("title") or name),
        "description": str(summary.get("description") or ""),
        "version": str(summary.get("version") or "0"),
    }
    if summary.get("keywords"):
        doc["keywords"] = list(summary["keywords"])
    doc |= {
        "jobControlOptions": list(JOB_CONTROL), "outputTransmission": list(TRANSMISSION),
        "links": [link(href, "self", title="process description"),
                  link(f"{href}/execution", REL_EXECUTE, title="execute")],
    }
    return doc


def process_description(model: ProcessModel, base: str) -> dict[str, Any]:
    doc = process_summary({"name": model.id, "title": model.title, "keywords": model.keywords,
                           "description": model.description, "version": model.version}, base)
    doc["inputs"] = {port.id: {
        "title": port.title, "description": port.description,
        "schema": port.described_schema(), "minOccurs": port.min_occurs,
        "maxOccurs": "unbounded" if port.max_occurs is None else port.max_occurs,
    } for port in model.inputs or ()}
    doc["outputs"] = {port.id: {"title": port.title, "description": port.description,
                                "schema": port.described_schema()}
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
