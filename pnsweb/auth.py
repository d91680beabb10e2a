"""HTTP Basic authentication for modifying calls and for reading jobs (a job is its creator's),
with a cache of verified credentials.

Owns deciding who the caller is: :func:`require_user` answers 401 (with
``WWW-Authenticate: Basic realm="pns"``) for missing, malformed or wrong credentials and for
nothing else, and 403 for a non-admin on an admin call. Passwords are checked against the
scrypt hashes of :class:`pnsweb.settings.User` in a worker thread (scrypt takes ~80 ms and must
not block the event loop); successes are remembered in a small LRU keyed by a MAC (keyed
BLAKE2b) of the Authorization header under a per-process random key, so neither the password
nor a fast hash of it is ever stored, and a known header is recognised without decoding it.
Failures are never cached. Failed logins back off per client (:mod:`pnsweb.throttle`, 429), and
each client has at most one check in the scrypt threads at a time (another is a 429 at once),
so one client's wrong logins never queue in front of another's right one. When pnsweb serves
from several processes, each failure and success is applied by all of them before the reply
(:mod:`pnsweb.sharing`), so the back-off holds whichever process a request reaches. Must not
call the daemon.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import hdrs, web

from pnsweb.errors import ApiError
from pnsweb.keys import SETTINGS, THROTTLE, VERIFIED
from pnsweb.settings import User, WebSettings, hash_password, verify_password
from pnsweb.sharing import tell

REALM = 'Basic realm="pns", charset="UTF-8"'
CACHE_SIZE = 256
HASH_THREADS = 2            # concurrent scrypt checks (each 16 MiB, ~80 ms)


class VerifiedCache:
    """Credentials verified recently: MAC(Authorization header) -> user, least recent evicted."""

    def __init__(self, size: int = CACHE_SIZE, *,
                 verify: Callable[[str, str], bool] | None = None) -> None:
        self._key = os.urandom(32)
        self._verify_password = verify
        self._size = size
        self._entries: OrderedDict[bytes, User] = OrderedDict()
        self._dummy_hash: str | None = None
        # scrypt takes 16 MiB and ~80 ms a check: two threads bound both the memory a burst of
        # logins costs and the CPU it steals; one check serves concurrent identical logins.
        self._hasher = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="scrypt")
        self._checking: dict[bytes, asyncio.Future[bool]] = {}
        # clients with a check in the threads: one each, so that no client's wrong logins
        # queue in front of another's (freed when the check ends, even if its caller left)
        self._clients: set[str] = set()

    def token(self, header: str) -> bytes:
        """The cache key of an Authorization header (it holds user and password)."""
        # keyed BLAKE2b is a MAC by design (RFC 7693), and cheaper than HMAC (bench/FINDINGS.md,
        # "Micro-measurements")
        # surrogatepass: a header aiohttp could not decode still has a key (and then fails)
        data = header.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, key=self._key, digest_size=32).digest()

    def get(self, token: bytes) -> User | None:
        user = self._entries.get(token)
        if user is not None:
            self._entries.move_to_end(token)
        return user

    def put(self, token: bytes, user: User) -> None:
        self._entries[token] = user
        self._entries.move_to_end(token)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    async def check(self, token: bytes, password: str, stored: str | None, *,
                    client: str = "") -> bool:
        """Verify ``password`` against ``stored`` (None: an unknown user, checked all the same).

        A check of other credentials while ``client`` has one under way is a 429 at once.
        """
        pending = self._checking.get(token)
        if pending is None:
            if client in self._clients:
                raise ApiError(429, "a login of this client is being checked: try again",
                               headers={"Retry-After": "1"})
            loop = asyncio.get_running_loop()
            pending = loop.run_in_executor(self._hasher, self._verify, password, stored)
            self._checking[token] = pending
            self._clients.add(client)
            pending.add_done_callback(lambda _done: self._done(token, client))
        return await asyncio.shield(pending)

    def _done(self, token: bytes, client: str) -> None:
        self._checking.pop(token, None)
        self._clients.discard(client)

    def _verify(self, password: str, stored: str | None) -> bool:
        verify = self._verify_password or verify_password     # None: the scrypt check
        return verify(password, stored or self.dummy_hash()) and stored is not None

    def dummy_hash(self) -> str:
        """A hash to check unknown users against, so they take as long as known ones."""
        if self._dummy_hash is None:
            self._dummy_hash = hash_password(os.urandom(16).hex())
        return self._dummy_hash

    def __len__(self) -> int:
        return len(self._entries)


USER_NAME = web.RequestKey("user", str)     # set once the caller is authenticated


async def require_user(request: web.Request, *, admin: bool = False) -> User:
    """The authenticated caller; 401 unless the credentials check, 403 if ``admin`` is needed."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        raise unauthorized("credentials are needed (HTTP Basic)")
    user = await authenticate(request, header)
    if admin and not user.admin:
        raise ApiError(403, f"user {user.name!r} may not do this: administrators only")
    request[USER_NAME] = user.name
    return user


async def authenticate(request: web.Request, header: str) -> User:
    """The user whose credentials an Authorization ``header`` holds (the console's sign-in
    passes one it made); 401 unless they check, 429 while the caller backs off."""
    cache = request.app[VERIFIED]
    if request.app[THROTTLE].waiting(request.remote or ""):
        request.app[THROTTLE].check(request.remote or "", credentials(header)[0])
    token = cache.token(header)
    user = cache.get(token)
    if user is None:
        user = await _verify(request, token, header)
    if user is None:
        raise unauthorized("wrong user name or password")
    return user


def credentials(header: str) -> tuple[str, str]:
    """User and password from an Authorization header; a 401 when it is malformed."""
    try:
        return decode_basic(header)
    except ValueError as exc:
        raise unauthorized(f"malformed Authorization header: {exc}") from None


def decode_basic(header: str) -> tuple[str, str]:
    """``(user, password)`` from ``Basic <base64 of user:password>`` (RFC 7617, UTF-8).

    Raises ValueError for another scheme, bad base64, text that is not UTF-8 or has no colon.
    """
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise ValueError("expected the Basic scheme")
    try:
        text = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("credentials are not base64 of UTF-8 text") from None
    name, colon, password = text.partition(":")
    if not colon:
        raise ValueError("credentials have no colon between user and password")
    return name, password


def unauthorized(detail: str) -> ApiError:
    return ApiError(401, detail, headers={hdrs.WWW_AUTHENTICATE: REALM})


async def _verify(request: web.Request, token: bytes, header: str) -> User | None:
    """Check the credentials of ``header`` (not in the cache) and remember them if they hold.

    A client backing off after failed logins is answered 429 before any check.
    """
    name, password = credentials(header)
    app = request.app
    settings: WebSettings = app[SETTINGS]
    cache, throttle = app[VERIFIED], app[THROTTLE]
    client = request.remote or ""
    throttle.check(client, name)
    user = settings.user(name)
    matches = await cache.check(token, password, user.password_hash if user else None,
                                client=client)
    if user is None or not matches:
        throttle.failed(client, name)
        await tell(app, {"kind": "login_failed", "client": client, "name": name})
        return None
    throttle.succeeded(client, name)
    await tell(app, {"kind": "login_succeeded", "client": client, "name": name})
    cache.put(token, user)
    return user
