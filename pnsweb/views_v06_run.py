"""``/v0.6`` views that run a PTS: ``/run``, ``/testrun``, ``/testcalc`` and ``/calc``, ``/sleep``.

Owns checking those bodies, the daemon ``run`` request each makes, and shaping the reply —
plain JSON, or the reference's class-tagged form (``pnsweb.fdi``) when the request came in it.

Errors, the same for every route here: a body that is not what the route takes is 400 (checked
here, before anything runs); ``/run``, ``/testrun`` and ``/sleep`` hold the reference's one lock
(:func:`pnsweb.views_v06.locked`): one of them, or another locked operation, while one runs is
409 ``Conflict. Updating.``; a run that exits non-zero is **502** and one killed at its timeout
**504**, both with ``"result": <returncode>`` (negative when killed, e.g. -9) and the outcome
``{command, stdout, stderr, returncode}`` as ``message`` — a failed run is never a 200; the
daemon unreachable is 503 with ``Retry-After``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pnsweb import fdi
from pnsweb.errors import ApiError
from pnsweb.keys import STAMP
from pnsweb.views_v06 import (
    call_run,
    default_pts,
    locked,
    outcome,
    read_json,
    read_object,
    timeout_of,
)
from pnsweb.views_v06_envelope import ok

HELLO_PTS = "hello"               # the reference's demo, run through its real scripts
TESTCALC_PTS = "testcalc"         # the reference's in-memory demo
SLEEP_PTS = "sleep-process"       # `sleep <secs>` as a child of a process-mode script
_SECONDS = re.compile(r"\d{1,9}(\.\d{1,6})?")


async def run(request: web.Request) -> web.StreamResponse:
    """POST /run: ``{"input": {file name: content}, "timeout"?}`` into the default PTS.

    ``result`` is ``{output file name: content}``, ``message`` the outcome.
    """
    body = await read_object(request)
    files = body.get("input")
    if not isinstance(files, dict) or not all(
            isinstance(v, str) for v in files.values()):
        raise ApiError(400, "'input' must map input file names to their text")
    reply = await call_run(request, "run",
                           locked(request, {"pts": default_pts(request), "input": files}),
                           timeout_of(body))
    result = reply.get("result") or {}
    return ok(request, result.get("outputs", {}), outcome(result))


async def testrun(request: web.Request) -> web.StreamResponse:
    """POST /testrun: the hello demo through the real ``runPTS``.

    Body ``{"creator", "rootcause", "input": {"theName": name}, "timeout"?}``, or the same as a
    class-tagged Product (answered in kind). ``result`` is ``{"creator", "rootcause",
    "theAnswer"}`` with runPTS's output text; ``message`` the outcome.
    """
    body = await read_json(request)
    tagged = fdi.is_tagged(body)
    plain = _plain_request(body)
    name = fdi.dataset_value(plain["input"].get("theName", "stranger"))
    if not isinstance(name, str):
        raise ApiError(400, "'input.theName' must be a string")
    reply = await call_run(request, "run",
                           locked(request, {"pts": HELLO_PTS, "input": {"infile": name}}),
                           plain.get("timeout"))
    result = reply.get("result") or {}
    answer = _text(result.get("outputs", {}).get("outfile", ""))
    creator, rootcause = plain["creator"], plain["rootcause"]
    if tagged:
        product = fdi.testrun_reply(creator=creator, rootcause=rootcause, answer=answer,
                                    now=request.app[STAMP].now())
        return ok(request, product, outcome(result))
    answer_body = {"creator": creator, "rootcause": rootcause, "theAnswer": answer}
    return ok(request, answer_body, outcome(result))


async def testcalc(request: web.Request) -> web.StreamResponse:
    """POST /testcalc and POST /calc: the reference's in-memory demo (PTS ``testcalc``).

    ``/calc`` ("the in-memory calculation of the default PTS") is this same calculation: the
    process-mode default PTS has none of its own. Body ``{"creator", "rootcause", "input":
    {"meta": {...}, dataset: data, ...}}`` or the class-tagged form (answered in kind).
    ``result`` echoes creator and rootcause, copies the first meta item and first dataset and
    adds a ``spectrum`` table.
    """
    body = await read_json(request)
    plain = _plain_request(body)
    product = plain["input"]
    if not isinstance(product.get("meta"), dict) or not product["meta"]:
        raise ApiError(400, "'input.meta' must be a non-empty object")
    if len(product) < 2:
        raise ApiError(400, "'input' must hold at least one dataset besides 'meta'")
    data = {key: plain[key] for key in ("creator", "rootcause", "input")}
    reply = await call_run(request, "run", {"pts": TESTCALC_PTS, "input": data},
                           plain.get("timeout"))
    result = reply.get("result")
    if fdi.is_tagged(body):
        result = _tagged_testcalc(request, result)
    return ok(request, result, "")


async def sleep(request: web.Request) -> web.StreamResponse:
    """POST /sleep/<secs>: run ``sleep <secs>`` as a PTS process; optional ``{"timeout": n}``.

    ``result`` is the return code (0), ``message`` the outcome. A run longer than the timeout is
    killed with its whole process group and answered 504 with ``"result": -9``.
    """
    seconds = request.match_info["secs"]
    if not _SECONDS.fullmatch(seconds):
        raise ApiError(400, f"{seconds!r} is not a number of seconds")
    body = await read_object(request, required=False)
    reply = await call_run(request, "run",
                           locked(request, {"pts": SLEEP_PTS, "input": {"seconds": seconds}}),
                           timeout_of(body))
    result = reply.get("result") or {}
    return ok(request, result.get("returncode"), outcome(result))


def _plain_request(body: Any) -> dict[str, Any]:
    """``{"creator", "rootcause", "input": {...}, "timeout"?}`` from a plain or tagged body."""
    if fdi.is_tagged(body):
        try:
            plain = fdi.read_request(body)
        except ValueError as exc:
            raise ApiError(400, f"malformed class-tagged body: {exc}") from None
        if "timeout" in plain:
            plain["timeout"] = timeout_of(plain)
        return plain
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object with creator, rootcause and input")
    for key in ("creator", "rootcause"):
        if not isinstance(body.get(key), str):
            raise ApiError(400, f"{key!r} must be a string")
    if not isinstance(body.get("input", {}), dict):
        raise ApiError(400, "'input' must be an object")
    plain = {"creator": body["creator"], "rootcause": body["rootcause"],
             "input": body.get("input", {})}
    timeout = timeout_of(body)
    if timeout is not None:
        plain["timeout"] = timeout
    return plain


def _tagged_testcalc(request: web.Request, result: Any) -> dict[str, Any]:
    """The daemon's plain testcalc result as the reference's tagged Product."""
    if not isinstance(result, Mapping):
        raise ApiError(502, "the testcalc PTS returned no result map")
    datasets = dict(result.get("datasets") or {})
    spectrum = datasets.pop("spectrum", {})
    meta_items = list((result.get("meta") or {}).items())
    if not meta_items or not datasets:
        raise ApiError(502, "the testcalc PTS returned no metadata item or dataset")
    return fdi.testcalc_reply(
        creator=str(result.get("creator", "")), rootcause=str(result.get("rootcause", "")),
        meta_item=meta_items[0], dataset=next(iter(datasets.items())), spectrum=spectrum,
        now=request.app[STAMP].now(),
    )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
