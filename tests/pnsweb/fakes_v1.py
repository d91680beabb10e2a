"""A fake daemon that behaves like pnsd for the /v1 and ops tests (no tests in this module).

It programs ``tests.pnsweb.fakes.FakeDaemon`` with the demo PTS specs (parsed by pnsd, whose
``pts.describe`` interface and input checks it answers with) and a small in-memory job book, so
the views can be driven end to end: run, submit, status, result, list, cancel, delete, watch
and status. Like pnsd, the book keeps each job's ``owner`` (jobs are the ordinary user
``USER``'s unless a test says otherwise), answers ``not_found`` for another owner's job,
deduplicates submissions by ``idempotency_key`` per owner and refuses submissions as ``busy``
beyond ``capacity`` unfinished jobs. Its replies and error details have the
shape of pnsd's (checked by ``tests/integration/test_web_fakes_contract.py``).
"""

from __future__ import annotations

import itertools
import math
import tomllib
import uuid
from typing import Any

import msgpack

from pnsd.demo import demo_specs_path
from pnsd.errors import DaemonError
from pnsd.spec import Mode, PtsSpec, parse_spec
from pnsd.validation import InputCheck
from pnsweb.settings import WebSettings
from protocols.errors import RemoteError
from tests.pnsweb.fakes import USER, FakeDaemon, basic, web_settings

UNFINISHED = ("accepted", "running")

AUTH = basic(USER)     # an ordinary user: /v1 execution and dismiss need no admin

def _demo_specs() -> dict[str, PtsSpec]:
    """The packaged demo PTS as pnsd parses them, and one user PTS declaring nothing."""
    tables = tomllib.loads(demo_specs_path().read_text(encoding="utf-8"))["pts"]
    specs = {name: parse_spec(name, tables[name])
             for name in ("echo", "sleep", "hello", "hello-worker", "testcalc")}
    specs["custom"] = parse_spec("custom", {"mode": "worker", "entry": "mine:run",
                                            "version": "2"})
    png = {"contentMediaType": "image/png"}
    specs["picture"] = parse_spec("picture", {
        "mode": "worker", "entry": "mine:draw", "version": "1",
        "inputs": {"image": {"schema": png}},
        "outputs": {"png": {"schema": png}, "size": {"schema": {"type": "integer"}}}})
    return specs


PTS = _demo_specs()
SPECS: dict[str, dict[str, Any]] = {name: spec.public() for name, spec in PTS.items()}
CHECKS = {name: InputCheck(name, spec.interface.inputs) for name, spec in PTS.items()}


def settings(**changes: Any) -> WebSettings:
    return web_settings(**changes)


def record(pts: str, status: str = "accepted", **changes: Any) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "pts": pts, "status": status, "created": 1_700_000_000.0,
            "started": None, "finished": None, "updated": 1_700_000_000.0, "progress": 0,
            "message": "", "reason": "", "sync": False, "version": "1", "owner": USER[0],
            "node": "node-a", **changes}


def compute(pts: str, data: Any) -> Any:
    """What the demo PTS return."""
    if pts == "hello":
        return {"command": ["runPTS"], "returncode": 0, "stdout": "", "stderr": "",
                "outputs": {"outfile": f"hello {data.get('infile', '')}!"}, "truncated": False}
    if pts == "sleep":
        return {"slept": data["seconds"]}
    if pts == "picture":
        return {"png": data["image"], "size": len(data["image"])}
    return data


def checked(body: Any) -> None:
    """Refuse an input as pnsd does (its own checks, the same errors)."""
    try:
        CHECKS[body["pts"]].check(body["input"])
    except DaemonError as exc:
        raise RemoteError(exc.code, exc.message, exc.details) from exc


class JobBook:
    """The daemon's jobs, in memory."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.results: dict[str, Any] = {}
        self.inputs: dict[str, Any] = {}
        self.keys: dict[tuple[str, str], str] = {}     # (owner, idempotency key) -> job id
        self.capacity: int | None = None               # unfinished jobs before "busy"

    def add(self, job: dict[str, Any], result: Any = None) -> dict[str, Any]:
        self.jobs[job["id"]] = job
        self.results[job["id"]] = result
        return job

    def get(self, body: Any) -> dict[str, Any]:
        job = self.jobs.get(body["job"])
        if job is None or body.get("owner") not in (None, job["owner"]):
            raise RemoteError("not_found", f"no job {body['job']}", {"job": body["job"]})
        return job

    def run(self, body: Any) -> Any:
        known(body["pts"])
        checked(body)
        job = self.add(record(body["pts"], "successful", sync=True, progress=100,
                              finished=1_700_000_001.0, owner=body.get("owner", "")),
                       compute(body["pts"], body["input"]))
        self.inputs[job["id"]] = body["input"]
        return {"job": job["id"], "result": self.results[job["id"]]}

    def submit(self, body: Any) -> Any:
        owner = body.get("owner", "")
        key = (owner, body["idempotency_key"]) if "idempotency_key" in body else None
        if key in self.keys:
            return {"job": self.jobs[self.keys[key]]}
        known(body["pts"])
        checked(body)
        unfinished = sum(job["status"] in UNFINISHED for job in self.jobs.values())
        if self.capacity is not None and unfinished >= self.capacity:
            raise RemoteError("busy", f"PTS {body['pts']} is busy", {"pts": body["pts"]})
        job = self.add(record(body["pts"], owner=owner))
        self.inputs[job["id"]] = body["input"]
        if key is not None:
            self.keys[key] = job["id"]
        return {"job": job}

    def result(self, body: Any) -> Any:
        job = self.get(body)
        if job["status"] in ("accepted", "running"):
            raise RemoteError("not_ready", "no result yet",
                              {"job": job["id"], "status": job["status"]})
        if job["status"] == "failed":
            raise RemoteError("pts_error", job["message"] or "failed")
        return {"job": job, "result": self.results[job["id"]]}

    def result_chunk(self, body: Any) -> Any:
        """A slice of the stored result's msgpack form, as pnsd answers job.result_chunk."""
        job = self.result(body)["job"]
        blob = msgpack.packb(self.results[job["id"]], use_bin_type=True)
        offset, limit = body["offset"], body.get("limit", len(blob))
        return {"job": job, "size": len(blob), "offset": offset,
                "data": blob[offset:offset + limit]}

    def list(self, body: Any) -> Any:
        since, until = (bound(body, key) for key in ("since", "until"))
        found = [j for j in reversed(self.jobs.values())
                 if body.get("status") in (None, j["status"])
                 and body.get("pts") in (None, j["pts"])
                 and body.get("owner") in (None, j["owner"])
                 and since <= j["created"] <= until]
        offset, limit = body.get("offset", 0), body.get("limit", 100)
        return {"jobs": found[offset:offset + limit], "total": len(found)}

    def cancel(self, body: Any) -> Any:
        job = self.get(body)
        if job["status"] == "accepted":
            job.update(status="dismissed", message="dismissed before it started")
        return {"job": dict(job)}

    def delete(self, body: Any) -> Any:
        job = dict(self.get(body))
        if job["status"] in UNFINISHED:
            job.update(status="dismissed", message="deleted on request")
        del self.jobs[body["job"]]
        self.keys = {key: id_ for key, id_ in self.keys.items() if id_ != job["id"]}
        return {"job": job}


def bound(body: Any, key: str) -> float:
    """``job.list``'s ``since``/``until`` as the daemon checks it (absent: unbounded)."""
    value = body.get(key)
    if value is None:
        return float("-inf") if key == "since" else float("inf")
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value < 0):
        raise RemoteError("bad_request", f"{key!r} must be a non-negative number", {})
    return float(value)


def known(name: str) -> None:
    if name not in SPECS:
        raise RemoteError("not_found", f"no PTS named {name!r}", {"pts": name})


def describe(body: Any) -> Any:
    known(body["name"])
    pts = PTS[body["name"]]
    return {"spec": SPECS[pts.name], "state": first_state(pts),
            "interface": pts.interface.described(process=pts.mode is Mode.PROCESS),
            "sync_results_kept": True}


def first_state(pts: PtsSpec) -> dict[str, Any]:
    """The state of a PTS's first generation, ready, as pnsd reports it."""
    return {"generation": 1, "version": pts.version, "mode": pts.mode.value, "running": 0,
            "queued": 0, "slots": pts.slots, "queue": pts.queue, "state": "ready", "reason": ""}


def status_reply(**states: str) -> dict[str, Any]:
    pts = {name: first_state(spec) for name, spec in PTS.items()}
    for name, state in states.items():
        pts[name].update(state=state, reason=f"{name} is {state}")
    return {"version": "0.1.0", "protocol": 1, "uptime": 12.5, "accepting": True, "pts": pts,
            "store": {"open": True, "queued": 0, "pending": 0, "commits": 7, "write_errors": 0,
                      "lost": 0, "bytes": 4096, "bound": 1 << 30, "node": "node-a",
                      "shared": False, "ownership_lost": 0, "reconnects": 0},
            "retiring": [], "refusals": {"refused": {}, "unanswered": 0}}


def demo_daemon() -> tuple[FakeDaemon, JobBook]:
    book = JobBook()
    seq = itertools.count(1)
    daemon = FakeDaemon()
    daemon.reply("pts.list", {"pts": [
        {"name": n, "mode": s["mode"], "version": s["version"], "title": s["title"],
         "description": s.get("description", ""), "keywords": s["keywords"], "state": "ready"}
        for n, s in SPECS.items()]})
    daemon.on("pts.describe", describe)
    daemon.on("run", book.run).on("submit", book.submit).on("job.result", book.result)
    daemon.on("job.result_chunk", book.result_chunk)
    daemon.on("job.status", lambda body: {"job": book.get(body)})
    daemon.on("job.list", book.list).on("job.cancel", book.cancel).on("job.delete", book.delete)
    daemon.on("status", lambda body: status_reply())
    daemon.on("ping", lambda body: {"version": "0.1.0", "protocol": 1, "time": float(next(seq))})
    return daemon, book
