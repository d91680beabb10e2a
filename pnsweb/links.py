"""Where links point: the public base URL of a request, and the check of its Host header.

Owns :func:`base_url` (``settings.public_url`` when one is configured, else the scheme and Host
the request arrived with) and :func:`host_middleware`, which answers 400 for a request whose
Host header is empty or not ``host[:port]`` (RFC 9112 asks a server to), and for an HTTP/1.1
request without one. Every absolute link and ``Location`` pnsweb writes starts with
:func:`base_url`; a Host that passed the check is safe to copy into them. Must not call the
daemon.
"""

from __future__ import annotations

import functools
import re

from aiohttp import hdrs, web

from pnsweb.errors import ApiError, Handler
from pnsweb.keys import SETTINGS

# A name or IPv4 address (RFC 3986 unreserved characters only) or an IPv6 literal, then a port.
_HOST = re.compile(r"(?:[A-Za-z0-9._~-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_HTTP_11 = (1, 1)


def check_host(host: str | None, version: tuple[int, int]) -> None:
    """Raise a 400 unless ``host`` is a well-formed Host header (absent is fine for HTTP/1.0)."""
    if host is None:
        if version >= _HTTP_11:
            raise ApiError(400, "the request has no Host header (HTTP/1.1 needs one)")
        return
    if not _HOST.fullmatch(host) or int(host.rpartition("]")[2].partition(":")[2] or 0) > 65535:
        shown = host[:64].encode("unicode_escape").decode("ascii")
        raise ApiError(400, f"the Host header {shown!r} is not a host name or address with an "
                            f"optional port")


@web.middleware
async def host_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer 400 for a malformed Host before any view sees the request."""
    check_host(request.headers.get(hdrs.HOST), (request.version.major, request.version.minor))
    return await handler(request)


def base_url(request: web.Request) -> str:
    """The absolute URL this service is reached at, without a trailing slash."""
    public = request.app[SETTINGS].public_url
    if public:
        return public
    host = request.headers.get(hdrs.HOST)
    if host is None:        # HTTP/1.0 without Host: the address the request arrived at
        host = _local_authority(request)
    return _origin(request.scheme, host)


@functools.lru_cache(maxsize=64)    # the Host header is the caller's: keep the cache bounded
def _origin(scheme: str, host: str) -> str:
    return f"{scheme}://{host.lower()}"


def _local_authority(request: web.Request) -> str:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        return "localhost"
    address, port = sockname[0], sockname[1]
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
