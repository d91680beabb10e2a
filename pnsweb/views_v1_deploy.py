"""The /v1 deploy, replace and undeploy views (OGC API - Processes - Part 2 shape), admin only.

Owns the HTTP side of hot swap: ``POST /v1/processes`` deploys (201, ``Location`` the new
process), ``PUT /v1/processes/{id}`` replaces (204), ``DELETE /v1/processes/{id}`` undeploys
(204). The body of a deploy is ``{"name": ..., "spec": {...}}`` (``id`` is accepted for
``name``), that of a replace ``{"spec": {...}}``; ``spec`` holds the keys of a ``[pts.NAME]``
table. Callers must be administrators; the daemon's audit trail records them as ``who``. The
daemon decides everything else, and its errors map through the one table of
:mod:`pnsweb.errors`: ``conflict`` 409 (the name exists, or another change is under way),
``bad_request`` 400 (the spec, or the new version failed to start: the old one keeps serving),
``not_found`` 404 as OGC's no-such-process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pnsweb import ogc
from pnsweb.auth import require_user
from pnsweb.keys import CLIENT, SETTINGS
from pnsweb.views_v1_io import NAME_RE, base_of, read_json, send_json
from protocols.errors import ErrorCode, RemoteError

SWAP_TIMEOUT = 300.0     # seconds a deploy or replace may take: start, init and self-test


async def deploy(request: web.Request) -> web.StreamResponse:
    """Deploy a process: a new PTS from its spec (admin only)."""
    user = await require_user(request, admin=True)
    body = await _body(request)
    name = body.get("name", body.get("id"))
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ogc.bad_request("'name' must be a PTS name: letters, digits, '_', '.', '-'")
    spec = _spec(body)
    reply = await _call(request, name, "pts.deploy", {"name": name, "spec": spec,
                                                      "who": user.name})
    base = base_of(request)
    summary = ogc.process_summary({"name": name, "title": spec.get("title"),
                                   "description": spec.get("description"),
                                   "version": reply.get("new_version")}, base)
    return await send_json(request, summary, status=201,
                           headers={"Location": f"{base}/processes/{name}"})


async def replace(request: web.Request) -> web.StreamResponse:
    """Replace a process: swap in a new version of its PTS (admin only)."""
    user = await require_user(request, admin=True)
    name = request.match_info["processId"]
    body = await _body(request)
    if body.get("name", name) != name:
        raise ogc.bad_request(f"the body names {body.get('name')!r}, the path {name!r}")
    await _call(request, name, "pts.replace", {"name": name, "spec": _spec(body),
                                               "who": user.name})
    return web.Response(status=204)


async def undeploy(request: web.Request) -> web.StreamResponse:
    """Undeploy a process: its runs drain, then its PTS is gone (admin only)."""
    user = await require_user(request, admin=True)
    name = request.match_info["processId"]
    await _call(request, name, "pts.undeploy", {"name": name, "who": user.name})
    return web.Response(status=204)


async def _body(request: web.Request) -> Mapping[str, Any]:
    body = await read_json(request, limit=request.app[SETTINGS].max_body)
    if not isinstance(body, Mapping):
        raise ogc.bad_request("the body must be a JSON object with 'spec'")
    return body


def _spec(body: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        raise ogc.bad_request("'spec' must be an object: the keys of a [pts.NAME] table")
    return spec


async def _call(request: web.Request, name: str, op: str, body: Any) -> Any:
    try:
        return await request.app[CLIENT].call(op, body, timeout=SWAP_TIMEOUT)
    except RemoteError as exc:
        if exc.code == ErrorCode.NOT_FOUND:
            raise ogc.no_such_process(name) from exc
        raise
