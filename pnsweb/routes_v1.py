"""The /v1 routes table (OGC API - Processes - Part 1: Core, job list, dismiss; Part 2 shape:
deploy, replace, undeploy).

Owns which URL and method reach which view, as plain data, and the state the /v1 views
share (the process catalogue). Views live in :mod:`pnsweb.views_v1`,
:mod:`pnsweb.views_v1_jobs` and :mod:`pnsweb.views_v1_deploy`; the OpenAPI document in
:mod:`pnsweb.openapi`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from pnsweb import openapi, views_v1, views_v1_deploy, views_v1_jobs
from pnsweb.views_v1_io import CATALOG, Catalog

View = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp tries the resources under a path prefix (here /v1/processes and /v1/jobs) in the
# order they were added, so execution, the busiest route, comes first; and a path's routes sit
# together under one name, which makes them one resource rather than one per method.
ROUTES: tuple[tuple[str, str, View, str], ...] = (
    ("GET", "/v1", views_v1.landing, "v1.landing"),
    ("GET", "/v1/", views_v1.landing, "v1.landing_slash"),
    ("GET", "/v1/conformance", views_v1.conformance, "v1.conformance"),
    ("GET", "/v1/openapi.json", openapi.view, "v1.openapi"),
    ("POST", "/v1/processes/{processId}/execution", views_v1.execute, "v1.execute"),
    ("GET", "/v1/processes", views_v1.processes, "v1.processes"),
    ("POST", "/v1/processes", views_v1_deploy.deploy, "v1.processes"),
    ("GET", "/v1/processes/{processId}", views_v1.process, "v1.process"),
    ("PUT", "/v1/processes/{processId}", views_v1_deploy.replace, "v1.process"),
    ("DELETE", "/v1/processes/{processId}", views_v1_deploy.undeploy, "v1.process"),
    ("GET", "/v1/jobs", views_v1_jobs.jobs, "v1.jobs"),
    ("GET", "/v1/jobs/{jobId}", views_v1_jobs.job, "v1.job"),
    ("DELETE", "/v1/jobs/{jobId}", views_v1_jobs.dismiss, "v1.job"),
    ("GET", "/v1/jobs/{jobId}/results", views_v1_jobs.results, "v1.results"),
    ("GET", "/v1/jobs/{jobId}/results/{outputId}", views_v1_jobs.output, "v1.output"),
    ("GET", "/v1/jobs/{jobId}/events", views_v1_jobs.events, "v1.events"),
)


def add_routes(app: web.Application) -> None:
    """Register every /v1 route on ``app`` (called by ``create_app``)."""
    app[CATALOG] = Catalog()
    for method, path, view, name in ROUTES:
        if method == "GET":
            app.router.add_get(path, view, name=name)      # and HEAD
        else:
            app.router.add_route(method, path, view, name=name)
