"""Typed keys for what a pnsweb app holds: its settings, its daemon client, its metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from aiohttp import web

from pnsweb.settings import WebSettings


class DaemonClient(Protocol):
    """What pnsweb needs of ``protocols.client.AsyncClient`` (tests pass a fake)."""

    async def call(self, op: str, body: Any = None, *, timeout: float | None = None) -> Any: ...

    def stream(
        self, op: str, body: Any = None, *, timeout: float | None = None
    ) -> AsyncIterator[Any]: ...

    async def close(self) -> None: ...


SETTINGS = web.AppKey("settings", WebSettings)
CLIENT = web.AppKey("client", DaemonClient)
