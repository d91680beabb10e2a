"""Every typed key of what a pnsweb app holds, in one place.

The root app (:func:`pnsweb.app.create_app`) holds what every face shares: the settings, the
daemon client, the reply clock of the reference's envelope, the credential cache, the login
throttle, the body parser and the request metrics. Each face's sub-app (``/v0.6``, ``/v1``) sees
the same objects under the same keys, so a view reads ``request.app[KEY]`` whichever app routed
it. Besides, every app has its :data:`ERROR_SHAPE`, and the ``/v1`` face its process
:data:`CATALOG`. Must not hold state itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from pnsweb.settings import WebSettings

if TYPE_CHECKING:    # these modules read their keys from here: a run-time import would be a cycle
    from pnsweb.auth import VerifiedCache
    from pnsweb.bodies import BodyParser
    from pnsweb.errors import ErrorShape
    from pnsweb.metrics import Metrics
    from pnsweb.sharing import Link
    from pnsweb.throttle import LoginThrottle
    from pnsweb.views_v06_envelope import Stamp
    from pnsweb.views_v1_io import Catalog


class DaemonClient(Protocol):
    """What pnsweb needs of ``protocols.client.AsyncClient`` (tests pass a fake)."""

    async def call(self, op: str, body: Any = None, *, timeout: float | None = None) -> Any: ...

    def stream(
        self, op: str, body: Any = None, *, timeout: float | None = None
    ) -> AsyncIterator[Any]: ...

    async def close(self) -> None: ...


# shared by every face (set on the root app)
SETTINGS = web.AppKey("settings", WebSettings)
CLIENT = web.AppKey("client", DaemonClient)
STAMP: web.AppKey[Stamp] = web.AppKey("v06_stamp")
VERIFIED: web.AppKey[VerifiedCache] = web.AppKey("verified_credentials")
THROTTLE: web.AppKey[LoginThrottle] = web.AppKey("login_throttle")
BODY_PARSER: web.AppKey[BodyParser] = web.AppKey("body_parser")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
# only when pnsweb serves from several processes: the link to the others (pnsweb.sharing)
PEERS: web.AppKey[Link] = web.AppKey("peers")

# each app's own
ERROR_SHAPE: web.AppKey[ErrorShape] = web.AppKey("error_shape")
CATALOG: web.AppKey[Catalog] = web.AppKey("v1_catalog")
