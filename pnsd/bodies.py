"""Request bodies field by field: each checker takes one field of an operation's body.

Owns the shape every operation's fields must have (strings, bounded integers, instants,
timeouts, ``who``, ``owner``, ``lock``) and the :class:`~pnsd.errors.BadRequest` naming the
field that is wrong. It must not look anything up in the daemon (the handlers do) nor decide
what a value means beyond its shape.
"""

from __future__ import annotations

import math
from typing import Any

from pnsd.errors import BadRequest

MAX_WHO = 200         # characters of an audit entry's "who"
MAX_OWNER = 200       # characters of a job's owner (a web user name)
MAX_KEY = 255         # characters of an idempotency key


def get(body: Any, key: str) -> Any:
    if not isinstance(body, dict):    # a msgpack map is a dict (and this is not an ABC check)
        raise BadRequest("request body must be a map")
    return body.get(key)


def required(body: Any, key: str) -> Any:
    if not isinstance(body, dict) or key not in body:
        raise BadRequest(f"request body needs {key!r}")
    return body[key]


def text(body: Any, key: str) -> str:
    value = get(body, key)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{key!r} must be a non-empty string")
    return value


def lock(body: Any) -> str | None:
    """The optional ``lock``: the name of the PTS whose slot an operation holds while it runs
    (pnsweb's /v0.6 routes: the reference's one lock, the default PTS's)."""
    name = get(body, "lock")
    if name is not None and (not isinstance(name, str) or not name):
        raise BadRequest("'lock' must be the name of a PTS")
    return name


def who(body: Any) -> str:
    """Who asks for a change, as the caller says (pnsweb: the user; the CLI: the OS user)."""
    who = get(body, "who")
    if who is None:
        return "unknown"
    if not isinstance(who, str) or not who or len(who) > MAX_WHO:
        raise BadRequest(f"'who' must be a non-empty string of at most {MAX_WHO} characters")
    return who


def owner(body: Any) -> str | None:
    """The web user the call is made for, as pnsweb says (it holds the node's key, and so does
    every caller); None: the operator, whose calls reach every job."""
    return optional(body, "owner", MAX_OWNER)


def optional(body: Any, key: str, longest: int) -> str | None:
    value = get(body, key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > longest:
        raise BadRequest(f"{key!r} must be a non-empty string of at most {longest} characters")
    return value


def integer(body: Any, key: str, default: int, low: int, high: int) -> int:
    value = get(body, key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{key!r} must be an integer from {low} to {high}")
    return value


def instant(body: Any, key: str) -> float | None:
    """An optional instant in epoch seconds: a finite, non-negative number."""
    value = get(body, key)
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value < 0):
        raise BadRequest(f"{key!r} must be a non-negative number of epoch seconds")
    return float(value)


def timeout(body: Any, cap: float) -> float:
    value = get(body, "timeout")
    if value is None:
        return cap
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise BadRequest("timeout must be a positive number of seconds")
    return min(float(value), cap)

