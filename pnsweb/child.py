"""One serving process of a pnsweb that serves from several (``python -m pnsweb.child HUB``).

Owns a child's life: join the parent's hub (:mod:`pnsweb.hub`) for the settings, the sessions'
key and the shared state; build the app with its own daemon client (each child has its own link
to pnsd); listen on the parent's port with ``SO_REUSEPORT`` (the kernel spreads the connections
over the children); tell the hub it serves; then serve until SIGTERM or SIGINT, or until the
hub's link closes (the parent is gone: a child never lives on alone). The parent
(:mod:`pnsweb.prefork`) starts, restarts and stops the children. Must not be started by hand.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

import structlog
import uvloop
from aiohttp import web

from pnslog import configure_logging
from pnsweb.app import create_app
from pnsweb.console.sessions import Sessions
from pnsweb.keys import METRICS, PEERS, THROTTLE
from pnsweb.nodes import daemon_client
from pnsweb.prefork import stop_signal
from pnsweb.replica import Replica
from pnsweb.sharing import Link, settings_from_wire
from protocols import memory

log = structlog.get_logger("pnsweb.child")   # not __main__, as run with -m
JOIN_TIMEOUT = 10.0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m pnsweb.child HUB_SOCKET (started by pnsweb itself)",
              file=sys.stderr)
        return 2
    uvloop.run(serve_child(args[0]))
    return 0


async def serve_child(hub_path: str) -> None:
    link = await Link.connect(hub_path)
    listening = asyncio.create_task(link.listen(), name="hub-link")
    try:
        hello = await _join(link)
        settings = settings_from_wire(hello["settings"])
        configure_logging(level="debug" if settings.verbose else settings.log_level)
        sessions = Sessions(key=bytes.fromhex(hello["session_key"]))
        client = await daemon_client(settings)
        try:
            app = create_app(settings, client=client, sessions=sessions)
            replica = Replica(app[THROTTLE], sessions)
            replica.load(hello["shared"])
            app[PEERS] = link
            link.serve(apply=replica.apply, snapshot=app[METRICS].snapshot)
            await _serve(app, settings.host, settings.port, link)
        finally:
            await client.close()
    finally:
        listening.cancel()
        await link.close()


async def _join(link: Link) -> dict[str, Any]:
    reply = await link.call("join", {"pid": os.getpid()}, timeout=JOIN_TIMEOUT)
    if not isinstance(reply, dict) or "settings" not in reply:
        raise RuntimeError(f"the hub's answer to a join is not a welcome: {reply!r}")
    return reply


async def _serve(app: web.Application, host: str, port: int, link: Link) -> None:
    runner = web.AppRunner(app, access_log=None)
    # large blocks mapped on their own: each parse thread's arena kept a 16 MiB body's copies
    trimming = asyncio.create_task(memory.keep_trimmed(log.debug, large_blocks=True),
                                   name="trim-memory")
    try:
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_port=True).start()
        await link.call("ready")
        log.info("pnsweb_child_serving", pid=os.getpid(), port=port)
        stopped = asyncio.create_task(stop_signal(), name="stop-signal")
        orphaned = asyncio.create_task(link.closed.wait(), name="hub-gone")
        await asyncio.wait({stopped, orphaned}, return_when=asyncio.FIRST_COMPLETED)
        for task in (stopped, orphaned):
            task.cancel()
        log.info("pnsweb_child_stopping", pid=os.getpid(), parent_gone=link.closed.is_set())
    finally:
        trimming.cancel()
        await runner.cleanup()


if __name__ == "__main__":
    sys.exit(main())
