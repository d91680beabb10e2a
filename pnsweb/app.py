"""The pnsweb application factory: ``create_app(settings, client=...)``: no global state, so
tests build as many apps as they like, each with its own fake or real daemon client.

Owns assembling the app: a root app holding the typed state every face shares (settings, daemon
client, reply clock, credential cache, login throttle, request metrics, body parser: the keys
are in :mod:`pnsweb.keys`), with the operations endpoints (:mod:`pnsweb.routes_ops`) and one
sub-app per face mounted under its prefix: ``/v0.6`` (:mod:`pnsweb.routes_v06`), ``/v1``
(:mod:`pnsweb.routes_v1`) and the operator console ``/console`` (:mod:`pnsweb.console`), each
with its own error middleware and error shape
(:mod:`pnsweb.errors`). The root's middlewares run around every request, a face's inside them:
the app's :func:`request_middleware` outermost, then the root's error middleware (problem+json,
or the routed face's shape for what the root refuses), then the Host check of
:mod:`pnsweb.links` (before any face or view sees the request). The hard body size limit
(``settings.max_body``, answered 413 in JSON; :mod:`pnsweb.bodies` holds callers to less before
they are authenticated) is the root's, which reads every request. It holds no other state and
never opens sockets itself: the caller owns the client (the CLI closes it; tests pass a fake).

Each face reads the shared state from its own app (``request.app[KEY]``): a face takes the
root's entries when the app starts (aiohttp starts sub-apps with their root), so what is set on
the root before then, by this factory or a test, is what every view sees. Why not
``request.config_dict``, aiohttp's lookup through the enclosing apps: it builds a chain of the
apps on every read, some twenty times the cost of a dict read, and views read several keys per
request.

Every request gets one summary line, ``request_finished``, at ``info``. Rendering
and writing it costs a large share of a small request's CPU; a deployment that serves many
small requests can set ``log_level = "warning"`` in ``[pnsweb]``, the /metrics counters and
latency histograms still account for every request. Whether the line is wanted is read from
the logging setup when the app is made, so configure logging first (the CLI does). Requests are
labelled in the metrics with their route's full path (``/v1/jobs/{jobId}``): aiohttp gives a
mounted sub-app's routes their prefix.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import secrets
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from pnsweb import console, routes_ops, routes_v06, routes_v1
from pnsweb.auth import USER_NAME, VerifiedCache
from pnsweb.bodies import BodyParser
from pnsweb.console.sessions import Sessions
from pnsweb.errors import PROBLEM, Handler, error_middleware
from pnsweb.keys import (
    BODY_PARSER,
    CLIENT,
    ERROR_SHAPE,
    METRICS,
    SETTINGS,
    STAMP,
    THROTTLE,
    VERIFIED,
    DaemonClient,
)
from pnsweb.links import host_middleware
from pnsweb.metrics import CLIENT_GONE, Metrics, route_of
from pnsweb.settings import WebSettings
from pnsweb.throttle import LoginThrottle
from pnsweb.views_v06_envelope import Stamp
from protocols.client import TRACE

REQUEST_ID = "X-Request-ID"
# an id we echo must be harmless in headers and logs
_GOOD_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
log = structlog.get_logger(__name__)


def create_app(settings: WebSettings, *, client: DaemonClient,
               sessions: Sessions | None = None) -> web.Application:
    """A pnsweb app serving ``/v0.6``, ``/v1`` and the operations endpoints over ``client``
    (``sessions``: the console's, when they are shared with other processes)."""
    metrics = Metrics()
    app = web.Application(
        client_max_size=settings.max_body,
        middlewares=[request_middleware(metrics), error_middleware(PROBLEM), host_middleware],
    )
    app[ERROR_SHAPE] = PROBLEM
    app[SETTINGS] = settings
    app[CLIENT] = client
    app[STAMP] = Stamp()
    app[VERIFIED] = VerifiedCache()
    app[METRICS] = metrics
    app[BODY_PARSER] = BodyParser()
    app[THROTTLE] = LoginThrottle()
    routes_ops.add_routes(app)
    mount(app, routes_v06.PREFIX, routes_v06.face())
    mount(app, routes_v1.PREFIX, routes_v1.face())
    app.router.add_get("/console", console.to_page, name="console.bare")
    mount(app, "/console", console.face(max_body=settings.max_body, shared=sessions))
    return app


def mount(root: web.Application, prefix: str, face: web.Application) -> None:
    """Serve ``face`` under ``prefix``; it takes ``root``'s shared state when the app starts."""
    face.on_startup.append(functools.partial(_share_state, root))
    root.add_subapp(prefix, face)


async def _share_state(root: web.Application, face: web.Application) -> None:
    for key, value in root.items():
        if key not in face:        # the face's own entries (its error shape) stay
            face[key] = value


# Request ids: a random prefix per process and a counter, cheaper than a random draw per
# request (bench/FINDINGS.md, "Micro-measurements").
_REQUEST_PREFIX = secrets.token_hex(8)
_request_counter = itertools.count()


def new_request_id() -> str:
    return f"{_REQUEST_PREFIX}{next(_request_counter):016x}"


def request_middleware(metrics: Metrics) -> Middleware:
    """The middleware that gives every request an id, counts and times it in ``metrics`` and
    logs its summary line.

    The id is the caller's X-Request-ID when it is harmless, else a new one. It is echoed in
    the reply, bound into structlog's contextvars (every line logged while serving the request
    carries it) and sent to the daemon as the protocol's trace id. Outermost, so the metrics
    see the final status (errors included, as the error middleware rendered them).
    """
    # Asked once: gathering the line's fields per request costs more than the line's absence
    # saves (at "warning", as busy nodes log, there is no line).
    summary_lines = log.get_effective_level() <= logging.INFO

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get(REQUEST_ID)
        request_id = given if given and _GOOD_REQUEST_ID.fullmatch(given) else new_request_id()
        started = time.perf_counter()
        status = 500
        # aiohttp serves each request in a task of its own, with a copy of the connection's
        # context (aiohttp #3406): what is set here ends with the request, no reset needed.
        TRACE.set(request_id)   # sent to the daemon with every call made for this request
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            response = await handler(request)
            status = response.status
            if not response.prepared:
                response.headers[REQUEST_ID] = request_id
            return response
        except web.HTTPException as exc:     # redirects and the like pass through
            status = exc.status
            exc.headers[REQUEST_ID] = request_id
            raise
        except asyncio.CancelledError:
            status = CLIENT_GONE
            raise
        finally:
            seconds = time.perf_counter() - started
            metrics.observe(request.method, route_of(request), status, seconds)
            if summary_lines:
                _summary_line(request, status, seconds)

    return middleware


def _summary_line(request: web.Request, status: int, seconds: float) -> None:
    log.info("request_finished", method=request.method, path=request.path, status=status,
             user=request.get(USER_NAME), seconds=round(seconds, 6))
