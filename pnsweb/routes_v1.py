"""The ``/v1`` face (OGC API - Processes - Part 1: Core, job list, dismiss; Part 2 shape:
deploy, replace, undeploy): its sub-app and its routes table.

Owns which URL and method reach which view, as plain data, the sub-app serving them under
:data:`PREFIX` with errors in RFC 7807 problem+json (:data:`pnsweb.errors.PROBLEM`), and the
state only the /v1 views share (the process catalogue). Views live in :mod:`pnsweb.views_v1`,
:mod:`pnsweb.views_v1_jobs` and :mod:`pnsweb.views_v1_deploy`; the OpenAPI document in
:mod:`pnsweb.openapi`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from pnsweb import openapi, views_v1, views_v1_deploy, views_v1_jobs
from pnsweb.errors import PROBLEM, face_app
from pnsweb.keys import CATALOG
from pnsweb.views_v1_io import Catalog

View = Callable[[web.Request], Awaitable[web.StreamResponse]]
PREFIX = "/v1"

# Paths are relative to PREFIX. aiohttp tries the resources under a path prefix (here
# /processes and /jobs) in the order they were added, so execution, the busiest route, comes
# first; and a path's routes sit together under one name, which makes them one resource rather
# than one per method.
ROUTES: tuple[tuple[str, str, View, str], ...] = (
    ("GET", "", views_v1.landing, "v1.landing"),
    ("GET", "/", views_v1.landing, "v1.landing_slash"),
    ("GET", "/conformance", views_v1.conformance, "v1.conformance"),
    ("GET", "/openapi.json", openapi.view, "v1.openapi"),
    ("POST", "/processes/{processId}/execution", views_v1.execute, "v1.execute"),
    ("GET", "/processes", views_v1.processes, "v1.processes"),
    ("POST", "/processes", views_v1_deploy.deploy, "v1.processes"),
    ("GET", "/processes/{processId}", views_v1.process, "v1.process"),
    ("PUT", "/processes/{processId}", views_v1_deploy.replace, "v1.process"),
    ("DELETE", "/processes/{processId}", views_v1_deploy.undeploy, "v1.process"),
    ("GET", "/jobs", views_v1_jobs.jobs, "v1.jobs"),
    ("GET", "/jobs/{jobId}", views_v1_jobs.job, "v1.job"),
    ("DELETE", "/jobs/{jobId}", views_v1_jobs.dismiss, "v1.job"),
    ("GET", "/jobs/{jobId}/results", views_v1_jobs.results, "v1.results"),
    ("GET", "/jobs/{jobId}/results/{outputId}", views_v1_jobs.output, "v1.output"),
    ("GET", "/jobs/{jobId}/events", views_v1_jobs.events, "v1.events"),
)


def face() -> web.Application:
    """The sub-app to mount at :data:`PREFIX`: every /v1 route and the process catalogue."""
    app = face_app(PROBLEM)
    app[CATALOG] = Catalog()
    for method, path, view, name in ROUTES:
        if method == "GET":
            app.router.add_get(path, view, name=name)      # and HEAD
        else:
            app.router.add_route(method, path, view, name=name)
    return app
