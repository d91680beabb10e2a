"""``/v0.6`` configuration views: ``GET /pnsconfig`` and ``PUT /pnsconf``.

Owns the configuration document those routes show and accept: the default PTS's spec (from the
daemon's ``pts.describe``) joined with pnsweb's own settings, every secret masked ``"***"``, and
the rules of the get-modify-put round trip. Of it all only the top-level ``timeout`` may change
(applied with ``pts.update``, which swaps in a new generation of the PTS, under the reference's
one lock: while a run or another locked operation goes on it is 409); the scripts can never
be pointed at another executable over the web.

Errors: no or wrong credentials 401; ``PUT /pnsconf`` by a non-admin 403 (the route table asks
for an admin); a body that is not ``{"input": {...}}``, an unknown key or a value of the wrong
type 400; any change to ``scripts``, a secret or another read-only key 403; the default PTS
unknown to the daemon 404; the daemon unreachable 503.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pnsweb.auth import USER_NAME
from pnsweb.errors import ApiError
from pnsweb.keys import SETTINGS
from pnsweb.settings import WebSettings
from pnsweb.views_v06 import MAX_TIMEOUT, call, default_pts, locked, read_object
from pnsweb.views_v06_envelope import ok

MASK = "***"
WRITABLE = frozenset({"timeout"})
SCRIPT_HOOKS = ("init", "config", "run", "clean")


def config_document(settings: WebSettings, spec: Mapping[str, Any]) -> dict[str, Any]:
    """What ``GET /pnsconfig`` shows: the default PTS's scripts and timeout, pnsweb's settings."""
    admins = [user.name for user in settings.users if user.admin]
    return {
        "scripts": {hook: list(spec.get(hook) or []) for hook in SCRIPT_HOOKS},
        "timeout": spec.get("timeout"),
        "pts": spec.get("name", settings.default_pts),
        "mode": spec.get("mode"),
        "inputs": list(spec.get("inputs") or []),
        "outputs": list(spec.get("outputs") or []),
        "host": settings.host,
        "port": settings.port,
        "endpoint": settings.endpoint,
        "username": admins[0] if admins else "",
        "password": MASK,
        "key": MASK,
        "max_body": settings.max_body,
        "call_timeout": settings.call_timeout,
    }


async def get_pnsconfig(request: web.Request) -> web.StreamResponse:
    """GET /pnsconfig (credentials needed): the configuration, secrets masked."""
    document = config_document(request.app[SETTINGS], await _spec(request))
    return ok(request, document, "the PNS configuration; secrets are masked")


async def put_pnsconf(request: web.Request) -> web.StreamResponse:
    """PUT /pnsconf (admin): ``{"input": {...}}``, a partial update; only ``timeout`` changes.

    Send back what ``GET /pnsconfig`` returned with values changed: unchanged keys and masked
    secrets are no-ops. ``result`` is the configuration after the update.
    """
    body = await read_object(request)
    wanted = body.get("input")
    if not isinstance(wanted, dict):
        raise ApiError(400, "the body must be {\"input\": {configuration keys: values}}")
    settings = request.app[SETTINGS]
    current = config_document(settings, await _spec(request))
    changes = changed_keys(current, wanted)
    if not changes:
        return ok(request, current, "nothing changed")
    body = locked(request, {"name": default_pts(request), "changes": changes,
                            "who": request.get(USER_NAME) or "pnsweb"})   # audit trail's "who"
    reply = await call(request, "pts.update", body)
    document = config_document(settings, reply.get("spec") or {})
    return ok(request, document, f"updated: {', '.join(sorted(changes))}")


def changed_keys(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The writable keys ``wanted`` changes; 400 for unknown keys or wrong types, 403 for
    changes to read-only keys (``scripts`` above all) and secrets."""
    changes: dict[str, Any] = {}
    for key, value in wanted.items():
        if key not in current:
            raise ApiError(400, f"unknown configuration key {key!r}")
        if key == "scripts":
            if value != current[key]:
                raise ApiError(403, "the scripts cannot be changed over the web")
            continue
        if not _same_kind(value, current[key]):
            raise ApiError(400, f"{key!r} must be {_kind(current[key])}")
        if value == current[key]:     # unchanged, or a secret sent back masked
            continue
        if key not in WRITABLE:
            raise ApiError(403, f"{key!r} is read-only")
        changes[key] = _checked_timeout(value)
    return changes


def _checked_timeout(value: Any) -> float:
    if not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT:
        raise ApiError(400, f"'timeout' must be above 0 and at most {MAX_TIMEOUT:g} seconds")
    return float(value)


def _same_kind(value: Any, current: Any) -> bool:
    return current is None or _kind(value) == _kind(current)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "null"


async def _spec(request: web.Request) -> Mapping[str, Any]:
    reply = await call(request, "pts.describe", {"name": default_pts(request)})
    spec = reply.get("spec")
    if not isinstance(spec, Mapping):
        raise ApiError(502, "the daemon described the PTS without a spec")
    return spec
