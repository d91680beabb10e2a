"""The pnsweb application factory: ``create_app(settings, client=...)``, no global state.

Owns assembling the app: its typed state (settings, daemon client, reply clock, credential
cache, login throttle, request metrics, body parser), the middlewares (the app's
:func:`request_middleware` outermost, then the one error middleware, then the Host check of
:mod:`pnsweb.links`), the hard body size limit (``settings.max_body``, answered 413 in JSON;
:mod:`pnsweb.bodies` holds callers to less before they are authenticated) and the route
modules. It holds no other state and never opens sockets itself: the caller owns the client
(the CLI closes it; tests pass a fake).

Every request gets one summary line, ``request_finished``, at ``info``. Rendering
and writing it costs a large share of a small request's CPU; a deployment that serves many
small requests can set ``log_level = "warning"`` in ``[pnsweb]``, the /metrics counters and
latency histograms still account for every request. Whether the line is wanted is read from
the logging setup when the app is made, so configure logging first (the CLI does).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import itertools
import logging
import re
import secrets
import time

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from pnsweb import routes_v06
from pnsweb.auth import USER_NAME, VERIFIED, VerifiedCache
from pnsweb.bodies import BODY_PARSER, BodyParser
from pnsweb.errors import Handler, error_middleware
from pnsweb.keys import CLIENT, SETTINGS, DaemonClient
from pnsweb.links import host_middleware
from pnsweb.metrics import CLIENT_GONE, METRICS, Metrics, route_of
from pnsweb.settings import WebSettings
from pnsweb.throttle import THROTTLE, LoginThrottle
from pnsweb.views_v06_envelope import STAMP, Stamp
from protocols.client import TRACE

REQUEST_ID = "X-Request-ID"
# an id we echo must be harmless in headers and logs
_GOOD_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# route modules written alongside this one; each has add_routes(app)
OPTIONAL_ROUTES = ("pnsweb.routes_v1", "pnsweb.routes_ops", "pnsweb.console")
log = structlog.get_logger(__name__)


def create_app(settings: WebSettings, *, client: DaemonClient) -> web.Application:
    """A pnsweb app serving ``/v0.6`` (and ``/v1`` and the operations endpoints) over ``client``."""
    metrics = Metrics()
    app = web.Application(
        client_max_size=settings.max_body,
        middlewares=[request_middleware(metrics), error_middleware, host_middleware],
    )
    app[SETTINGS] = settings
    app[CLIENT] = client
    app[STAMP] = Stamp()
    app[VERIFIED] = VerifiedCache()
    app[METRICS] = metrics
    app[BODY_PARSER] = BodyParser()
    app[THROTTLE] = LoginThrottle()
    routes_v06.add_routes(app)
    for name in OPTIONAL_ROUTES:
        # find_spec first: a module that is absent is skipped, one that fails to import raises
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).add_routes(app)
    return app


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
