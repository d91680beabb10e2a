"""Operations endpoints: ``/healthz``, ``/readyz``, ``/metrics``, and their routes table.

Owns liveness (the web process answers; no daemon call), readiness (the daemon answers
``status`` within :data:`READY_TIMEOUT` and every PTS is ``ready``; otherwise 503 with
``Retry-After`` and a JSON body naming each degraded PTS and why) and the Prometheus scrape
(the request metrics that :func:`pnsweb.app.request_middleware` records, of this process or,
serving from several, of all of them added up, plus figures fetched from the daemon at scrape
time).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pnsweb import ogc
from pnsweb.errors import ApiError
from pnsweb.keys import CLIENT, METRICS, PEERS, DaemonClient
from pnsweb.metrics import CONTENT_TYPE, Metrics, exposition, render_daemon, render_processes
from pnsweb.sharing import LinkClosed
from pnsweb.views_v06_envelope import json_response
from protocols.errors import PnsError

READY_TIMEOUT = 2.0      # seconds: a readiness probe must answer fast
SCRAPE_TIMEOUT = 3.0
RETRY_AFTER = "5"

View = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def healthz(request: web.Request) -> web.StreamResponse:
    """Liveness: the web process is up (the daemon is not asked)."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    """Readiness: 200 when the daemon answers and every PTS is ready, else 503 naming why."""
    try:
        status = await request.app[CLIENT].call("status", {}, timeout=READY_TIMEOUT)
    except (PnsError, TimeoutError) as exc:
        return _not_ready({"status": "unavailable",
                           "daemon": {"reachable": False, "reason": str(exc)}})
    pts: dict[str, Any] = status.get("pts") or {}
    degraded = {name: {"state": info.get("state"), "reason": info.get("reason") or ""}
                for name, info in sorted(pts.items()) if info.get("state") != "ready"}
    body: dict[str, Any] = {"status": "ready", "daemon": {"reachable": True,
                                                          "version": status.get("version")},
                            "pts": {name: info.get("state") for name, info in sorted(pts.items())}}
    if status.get("accepting") is False:
        body["status"] = "degraded"
        body["daemon"]["reason"] = "the daemon is shutting down"
    if degraded:
        body["status"] = "degraded"
        body["degraded"] = degraded
    if body["status"] != "ready":
        return _not_ready(body)
    return json_response(body)


def _not_ready(body: dict[str, Any]) -> web.Response:
    return json_response(body, status=503, headers={"Retry-After": RETRY_AFTER})


async def metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus text exposition: requests, latency, and the daemon's figures."""
    status, jobs = await daemon_figures(request.app[CLIENT])
    lines = await request_lines(request.app) + render_daemon(status, jobs)
    response = web.Response(text=exposition(lines))
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def request_lines(app: web.Application) -> list[str]:
    """This process's request metrics, or, serving from several, the sum of all of theirs."""
    peers = app.get(PEERS)
    if peers is None:
        return app[METRICS].render() + render_processes(1)
    try:
        gathered = await peers.metrics()
    except (LinkClosed, TimeoutError) as exc:
        raise ApiError(503, f"the other pnsweb processes' metrics are out of reach: {exc!r}",
                       headers={"Retry-After": RETRY_AFTER}) from exc
    total = Metrics()
    total.merge(gathered["rows"])
    return total.render() + render_processes(int(gathered["processes"]))


async def daemon_figures(client: DaemonClient) -> tuple[dict[str, Any] | None, dict[str, int]]:
    """The daemon's ``status`` and job totals per status (``job.list`` with limit 1)."""
    try:
        async with asyncio.timeout(SCRAPE_TIMEOUT):
            status, *totals = await asyncio.gather(
                client.call("status", {}, timeout=SCRAPE_TIMEOUT),
                *(client.call("job.list", {"status": s, "limit": 1}, timeout=SCRAPE_TIMEOUT)
                  for s in ogc.JOB_STATUSES))
    except (PnsError, TimeoutError):
        return None, {}
    return status, {s: int(reply.get("total", 0)) for s, reply in zip(
        ogc.JOB_STATUSES, totals, strict=True)}


ROUTES: tuple[tuple[str, View, str], ...] = (
    ("/healthz", healthz, "ops.healthz"),
    ("/readyz", readyz, "ops.readyz"),
    ("/metrics", metrics, "ops.metrics"),
)


def add_routes(app: web.Application) -> None:
    """Register the operations routes (the app's metrics come from ``create_app``)."""
    for path, view, name in ROUTES:
        app.router.add_get(path, view, name=name)
