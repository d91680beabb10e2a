"""Who is using the console: login sessions, the same-origin rule for writes, page headers.

Owns the console's sign-in: ``POST /console/api/login`` checks a user name and password against
the API's users with the API's own machinery (:func:`pnsweb.auth.authenticate`: the scrypt
threads, the credential cache and the login back-off), then opens a session. The session is a
random token in a cookie that is ``HttpOnly`` (the page's scripts never see it),
``SameSite=Strict`` (another site's page never sends it), ``Path=/console`` and ``Secure`` when
the console is reached over https; the server keeps only a MAC of the token, with the user's
name and an expiry. No password, hash or key is ever sent to the page. A user removed from the
configuration loses their sessions at once; an administrator's rights are read anew on every
request.

Writes (every method but GET and HEAD) must come from the console's own pages: the browser's
``Sec-Fetch-Site`` must be ``same-origin`` when present, and ``Origin`` must be this server
(:func:`pnsweb.links.base_url`; the scheme is not compared, as a proxy may end TLS in front).
A write with neither header is refused too: every browser sends ``Origin`` on such requests, and
other clients have the HTTP API. Sessions live in memory: restarting pnsweb signs everybody
out. When pnsweb serves from several processes, a session opened or closed by one is applied
by all before the reply goes out (:mod:`pnsweb.sharing`, as the MAC of its token under a key
they share). Must not call the daemon.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import hdrs, web
from yarl import URL

from pnsweb.auth import USER_NAME, authenticate
from pnsweb.bodies import read_json_body
from pnsweb.errors import ApiError, Handler
from pnsweb.keys import SETTINGS
from pnsweb.links import base_url
from pnsweb.settings import User
from pnsweb.sharing import tell
from pnsweb.views_v06_envelope import json_response

COOKIE = "pns_console"
LIFETIME = 8 * 3600          # seconds a session lasts after sign-in
MAX_SESSIONS = 4096          # the oldest is dropped beyond this (bounds memory)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PAGE_HEADERS = {
    # the console's pages load only their own files; nothing may frame them
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class Session:
    user: str
    expires: float


class Sessions:
    """Open sessions by MAC of their token; the oldest goes first when there are too many."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 lifetime: float = LIFETIME, size: int = MAX_SESSIONS,
                 key: bytes | None = None) -> None:
        self._key = key or os.urandom(32)
        self._clock = clock
        self._lifetime = lifetime
        self._size = size
        self._open: OrderedDict[bytes, Session] = OrderedDict()

    def _mac(self, token: str) -> bytes:
        return hashlib.blake2b(token.encode(), key=self._key, digest_size=32).digest()

    def open(self, user: str) -> str:
        """A new session for ``user``; its token (the cookie's value)."""
        token = secrets.token_urlsafe(32)
        self.add(self._mac(token), Session(user, self._clock() + self._lifetime))
        return token

    def add(self, mac: bytes, session: Session) -> None:
        """Keep a session by the MAC of its token (one this process or another opened)."""
        self._open[mac] = session
        while len(self._open) > self._size:
            self._open.popitem(last=False)

    def drop(self, mac: bytes) -> None:
        self._open.pop(mac, None)

    def mac_of(self, token: str) -> bytes:
        return self._mac(token)

    def export(self) -> list[list[Any]]:
        """The open sessions as plain data: ``[MAC hex, user, expiry]`` each, oldest first."""
        return [[mac.hex(), s.user, s.expires] for mac, s in self._open.items()]

    def load(self, rows: list[list[Any]]) -> None:
        """Take the sessions of :meth:`export` (another process's) in place of these."""
        self._open.clear()
        for mac, user, expires in rows:
            self.add(bytes.fromhex(mac), Session(str(user), float(expires)))

    def find(self, token: str | None) -> Session | None:
        if not token:
            return None
        mac = self._mac(token)
        session = self._open.get(mac)
        if session is not None and session.expires <= self._clock():
            del self._open[mac]
            return None
        return session

    def close(self, token: str | None) -> None:
        if token:
            self._open.pop(self._mac(token), None)

    def __len__(self) -> int:
        return len(self._open)


SESSIONS = web.AppKey("console_sessions", Sessions)


async def console_user(request: web.Request, *, admin: bool = False) -> User:
    """The signed-in user; 401 without a live session, 403 if ``admin`` is needed."""
    session = request.app[SESSIONS].find(request.cookies.get(COOKIE))
    user = request.app[SETTINGS].user(session.user) if session is not None else None
    if user is None:
        raise ApiError(401, "sign in to use the console")
    if admin and not user.admin:
        raise ApiError(403, f"user {user.name!r} may not do this: administrators only")
    request[USER_NAME] = user.name
    return user


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse cross-site writes before anything else; give every reply the page headers."""
    if request.method not in SAFE_METHODS:
        check_same_origin(request)
    response = await handler(request)
    if not response.prepared:
        response.headers.update(PAGE_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def check_same_origin(request: web.Request) -> None:
    """403 unless the browser says the request comes from this server's own pages."""
    site = request.headers.get("Sec-Fetch-Site")
    origins = request.headers.getall(hdrs.ORIGIN, [])
    if site is not None and site != "same-origin":
        raise _cross_site(f"Sec-Fetch-Site is {site!r}")
    if not origins:
        if site is None:
            raise _cross_site("a console write must carry Origin (browsers send it)")
        return
    if len(origins) > 1 or not same_authority(origins[0], URL(base_url(request)).raw_authority):
        raise _cross_site(f"Origin {origins[0][:100]!r} is not this server")


def same_authority(origin: str, authority: str) -> bool:
    """Whether ``origin`` is ``http(s)://`` + ``authority`` and nothing more."""
    try:
        claimed = URL(origin)
    except ValueError:
        return False
    if (claimed.scheme not in ("http", "https") or not claimed.host or claimed.user
            or claimed.raw_path not in ("", "/") or claimed.query_string or claimed.fragment):
        return False
    own = URL.build(scheme=claimed.scheme, authority=authority)
    return (claimed.host.lower(), claimed.port) == ((own.host or "").lower(), own.port)


def _cross_site(why: str) -> ApiError:
    return ApiError(403, f"a request from another site's page may not change anything: {why}")


# -- views ---------------------------------------------------------------------------------


async def login(request: web.Request) -> web.StreamResponse:
    """Sign in with ``{"user", "password"}``: a session cookie, and who the user is."""
    body = await read_json_body(request)
    name, password = (body.get(key) if isinstance(body, dict) else None
                      for key in ("user", "password"))
    if not isinstance(name, str) or not isinstance(password, str) or ":" in name:
        raise ApiError(400, "give 'user' and 'password' as text (a user name has no ':')")
    basic = base64.b64encode(f"{name}:{password}".encode()).decode()
    try:
        user = await authenticate(request, f"Basic {basic}")
    except ApiError as exc:
        if exc.status != 401:
            raise            # the back-off's 429 with its Retry-After
        raise ApiError(401, "wrong user name or password") from None
    request[USER_NAME] = user.name
    sessions = request.app[SESSIONS]
    token = sessions.open(user.name)
    session = sessions.find(token)
    if session is not None:          # every process of the port knows it before the reply
        await tell(request.app, {"kind": "session_opened", "mac": sessions.mac_of(token).hex(),
                                 "user": session.user, "expires": session.expires})
    response = json_response({"user": user.name, "admin": user.admin})
    response.set_cookie(COOKIE, token, max_age=LIFETIME, path="/console", httponly=True,
                        samesite="Strict", secure=_secure(request))
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    token = request.cookies.get(COOKIE)
    request.app[SESSIONS].close(token)
    if token:
        await tell(request.app, {"kind": "session_closed",
                                 "mac": request.app[SESSIONS].mac_of(token).hex()})
    response = json_response({"user": None})
    response.del_cookie(COOKIE, path="/console")
    return response


async def me(request: web.Request) -> web.StreamResponse:
    user = await console_user(request)
    return json_response({"user": user.name, "admin": user.admin})


def _secure(request: web.Request) -> bool:
    return request.secure or base_url(request).startswith("https:")
