"""The ``/v0.6`` face: its sub-app, and its route table with who may call each route.

Owns the table (plain data: method, path, view, access, description), the sub-app serving it
under :data:`PREFIX` with the access rules applied and errors in the reference's envelope
(:data:`pnsweb.errors.ENVELOPE`), and the API listing at ``/v0.6/`` and ``/v0.6/api`` built from
it.
The descriptions are the reference implementation's own, odd spacing included. Access
follows the reference's: every PUT, POST (except ``/echo``) and DELETE needs credentials;
GET does not, except ``/pnsconfig``; ``PUT /pnsconf`` is for administrators. Every write
(PUT, POST, DELETE) from another site's page is refused (403) before credentials are looked at,
so that a cross-site form cannot start a run with credentials the browser remembers.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from aiohttp import hdrs, web
from yarl import URL

from pnsweb import views_v06 as v
from pnsweb import views_v06_config as conf
from pnsweb import views_v06_run as run
from pnsweb.auth import require_user
from pnsweb.errors import ENVELOPE, ApiError, face_app
from pnsweb.keys import STAMP
from pnsweb.links import base_url
from pnsweb.views_v06 import View
from pnsweb.views_v06_envelope import JSON_TYPE, dumps

PREFIX = "/v0.6"


class Access(enum.Enum):
    PUBLIC = "public"
    USER = "user"        # any authenticated user
    ADMIN = "admin"


@dataclass(frozen=True)
class Route:
    method: str
    path: str            # under PREFIX
    view: View
    access: Access
    description: str


_FILES = " returns names and contents of all files in the dir, 'None' if dir not existing. "
_PUBLIC, _USER, _ADMIN = Access.PUBLIC, Access.USER, Access.ADMIN

ROUTES: tuple[Route, ...] = (
    Route("GET", "/init", v.script_view("init"), _PUBLIC, "the initPTS file"),
    Route("GET", "/config", v.script_view("config"), _PUBLIC, "the configPTS file"),
    Route("GET", "/run", v.script_view("run"), _PUBLIC, "the file running PTS"),
    Route("GET", "/clean", v.script_view("clean"), _PUBLIC, "the cleanPTS file"),
    Route("GET", "/input", v.files_view("input"), _PUBLIC, _FILES),
    Route("GET", "/output", v.files_view("output"), _PUBLIC, _FILES),
    Route("GET", "/pnsconfig", conf.get_pnsconfig, _USER, "PNS configuration"),
    Route("PUT", "/init", v.hook_view("init"), _USER,
          " Initialize the Processing Task Software by running the init script defined in the "
          "config. Execution on the server host is in the pnshome directory and run result and "
          "status are returned. If input/output directories cannot be created with serveruser "
          "as owner, Error401 will be given.\n    "),
    Route("PUT", "/config", v.hook_view("config"), _USER,
          " Configure the Processing Task Software by running the config script. Ref init PTS."
          "\n    "),
    Route("PUT", "/pnsconf", conf.put_pnsconf, _ADMIN,
          " Configure the PNS itself by replacing the pnsconfig var\n    "),
    Route("PUT", "/inittest", v.reset_demo, _USER,
          "     Renames the 'init' 'config' 'run' 'clean' scripts to \"*.save\" and points it to "
          "the '.ori' scripts.\n    "),
    Route("PUT", "/testinit", v.reset_demo, _USER,
          "     Renames the 'init' 'config' 'run' 'clean' scripts to \"*.save\" and points it to "
          "the '.ori' scripts.\n    "),
    Route("POST", "/calc", run.testcalc, _USER,
          " generates result product directly using data on PNS.\n    "),
    Route("POST", "/testcalc", run.testcalc, _USER,
          " generate post test product.\n    put the 1st input (see maketestdata in "
          "test_all.py)\n    parameter to metadata\n    and 2nd to the product's dataset\n    "),
    Route("POST", "/echo", v.echo, _PUBLIC, "Echo"),
    Route("POST", "/run", run.run, _USER,
          " Generates a product by running script defined in the config under 'run'. Execution "
          "on the server host is in the pnshome directory and run result and status are "
          "returned.\n    "),
    Route("POST", "/testrun", run.testrun, _USER,
          "  Run 'runPTS' for testing, and as an example.\n    "),
    Route("POST", "/sleep/{secs}", run.sleep, _USER,
          " Run 'sleep <secs>' as a PTS process; a run longer than the body's timeout is "
          "killed.\n    "),
    Route("DELETE", "/clean", v.hook_view("clean"), _USER,
          " Removing traces of past runnings the Processing Task Software.\n    "),
)


def face() -> web.Application:
    """The sub-app to mount at :data:`PREFIX`: the listing and every route of :data:`ROUTES`,
    access rules applied (its paths are relative to the prefix)."""
    app = face_app(ENVELOPE)
    for path in ("", "/", "/api"):
        app.router.add_get(path, api_listing)
    for route in ROUTES:
        view = route.view if route.access is Access.PUBLIC else guarded(route.view, route.access)
        if route.method == "GET":
            app.router.add_get(route.path, view)
        else:
            app.router.add_route(route.method, route.path, same_site(view))
    return app


def same_site(view: View) -> View:
    """``view`` refused (403) to a cross-site browser: a write whose ``Origin`` is not this
    server's own, checked before credentials (a browser sends remembered ones by itself)."""

    async def checked(request: web.Request) -> web.StreamResponse:
        if is_cross_site(request):
            raise ApiError(403, "a request from another site's page may not modify this server")
        return await view(request)

    return checked


def is_cross_site(request: web.Request) -> bool:
    """True when a browser says the request comes from another site's page.

    No ``Origin`` is allowed: the reference's clients send none. ``Origin: null`` (a sandboxed
    or file page, a redirect) and a malformed one are cross-site; otherwise its host and port
    must be this server's (:func:`pnsweb.links.base_url`: the configured public URL, else the
    request's ``Host``). The scheme is not compared, so that a proxy ending TLS in
    front of pnsweb (an https page, an http request here) is still the same site.
    """
    origins = request.headers.getall(hdrs.ORIGIN, [])
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        return True
    if not origins:
        return False
    return len(origins) > 1 or not _own_origin(origins[0], URL(base_url(request)).raw_authority)


@functools.lru_cache(maxsize=256)   # both values are the caller's: keep the cache bounded
def _own_origin(origin: str, host: str) -> bool:
    try:
        claimed = URL(origin)
        if (claimed.scheme not in ("http", "https") or not claimed.host or claimed.user
                or claimed.raw_path not in ("", "/") or claimed.query_string
                or claimed.fragment):
            return False                # not an origin: scheme://host[:port] and nothing more
        own = URL.build(scheme=claimed.scheme, authority=host)
    except ValueError:
        return False
    return (claimed.host, claimed.port) == (own.host, own.port)


def guarded(view: View, access: Access) -> View:
    """``view`` behind HTTP Basic: 401 without valid credentials, 403 for a non-admin if
    ``access`` is ADMIN."""

    async def authenticated(request: web.Request) -> web.StreamResponse:
        await require_user(request, admin=access is Access.ADMIN)
        return await view(request)

    return authenticated


async def api_listing(request: web.Request) -> web.StreamResponse:
    """GET /v0.6/ and /v0.6/api: every route with its absolute URL and description.

    The body is ``{"APIs": ..., "timestamp": ...}``; only the timestamp changes between two
    requests to one origin, so the APIs' JSON text is made once per origin.
    """
    apis = listing_text(base_url(request) + PREFIX)
    timestamp = repr(request.app[STAMP].now())    # a finite float's JSON text is its repr
    return web.Response(text=f'{{"APIs": {apis}, "timestamp": {timestamp}}}',
                        content_type=JSON_TYPE)


@functools.lru_cache(maxsize=64)    # the Host header is the caller's: keep the cache bounded
def listing_text(base: str) -> str:
    """The JSON text of the ``APIs`` member for requests that reached ``base`` (``.../v0.6``)."""
    apis: dict[str, list[dict[str, str]]] = {}
    for route in ROUTES:
        apis.setdefault(route.method, []).append(
            {"URL": base + route.path, "description": route.description})
    return dumps(dict(sorted(apis.items())))
