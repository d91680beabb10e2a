"""The console's sub-application: its routes table, its static files and how it is mounted.

Owns :func:`face`, the console's app with its own state (the sessions) and routes, which
:func:`pnsweb.app.create_app` mounts at ``/console``; it takes the root's shared state
(settings, daemon client, credential cache, login back-off, body parser: the same users and
limits as the API) when the app starts, as every face does. ``/console`` itself redirects to
``/console/`` (:func:`to_page`, a route of the root). The pages are plain HTML, CSS and
JavaScript modules under ``static/``, shipped in the package with the charting library they use
(uPlot, under ``static/vendor/`` with its licence): nothing is built and nothing is fetched from
elsewhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from pnsweb.console import jobs, sessions, views
from pnsweb.console.sessions import SESSIONS, Sessions, console_middleware

STATIC = Path(__file__).parent / "static"
View = Callable[[web.Request], Awaitable[web.StreamResponse]]

async def page(request: web.Request) -> web.StreamResponse:
    """The console's one page (it signs in and shows each view itself)."""
    return web.FileResponse(STATIC / "index.html")


ROUTES: tuple[tuple[str, str, View], ...] = (
    ("GET", "/", page),
    ("POST", "/api/login", sessions.login),
    ("POST", "/api/logout", sessions.logout),
    ("GET", "/api/me", sessions.me),
    ("GET", "/api/node", views.node),
    ("GET", "/api/pts", views.pts_list),
    ("POST", "/api/pts", views.deploy),
    ("GET", "/api/pts/{name}", views.pts_one),
    ("DELETE", "/api/pts/{name}", views.undeploy),
    ("GET", "/api/stats", views.stats),
    ("GET", "/api/jobs", jobs.jobs),
    ("POST", "/api/jobs", jobs.submit),
    ("GET", "/api/jobs/{id}", jobs.job),
    ("DELETE", "/api/jobs/{id}", jobs.delete),
    ("POST", "/api/jobs/{id}/cancel", jobs.cancel),
    ("GET", "/api/jobs/{id}/outputs", jobs.outputs),
    ("GET", "/api/jobs/{id}/outputs/{n}", jobs.output),
    ("GET", "/api/jobs/{id}/events", jobs.events),
)


async def to_page(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/")


def face(*, max_body: int, shared: Sessions | None = None) -> web.Application:
    """The console app: its sessions (``shared`` when given, else new ones), its routes and
    its static files."""
    console = web.Application(client_max_size=max_body,
                              middlewares=[console_middleware])
    console[SESSIONS] = shared if shared is not None else Sessions()
    for method, path, view in ROUTES:
        parts = [part.strip("{}") for part in path.split("/") if part] or ["page"]
        console.router.add_route(method, path, view, name=".".join(["console", *parts]))
    console.router.add_static("/static", STATIC, name="console.static")
    return console
