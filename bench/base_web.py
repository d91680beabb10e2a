"""Baseline 3: a bare aiohttp server — a hello handler, and handlers doing one ZeroMQ round trip.

``python -m bench.base_web PORT ECHO_ENDPOINT [uvloop]``: on asyncio's own loop, as the issues
define the baselines, or on uvloop, the loop pnsweb serves on (for information). An
ECHO_ENDPOINT ``unix:PATH`` is the same echo over a Unix stream (:mod:`bench.base_stream`)
instead of ZeroMQ. Routes:

- ``GET /hello``: a small JSON body (the floor of any aiohttp route);
- ``POST /echo``: the JSON body -> msgpack -> one round trip to the bare echo process
  (:mod:`bench.base_echo`) -> JSON back (the baseline of ``/v0.6/echo``);
- ``POST /jsonecho``: the JSON body parsed and sent back, no ZeroMQ (the baseline of
  ``/v0.6/echo``, which pnsweb answers itself without asking the daemon);
- ``POST /v1echo``: the ZeroMQ round trip, for an OGC execute body
  ``{"inputs": {"value": X}}``, answering ``X`` (the baseline of
  ``/v1/processes/echo/execution``).

No auth, middlewares, logging or envelope: what the same libraries do with nothing else.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

from bench.bare_wire import BareAsyncClient
from bench.base_stream import BareStreamClient

CLIENT = web.AppKey("client", BareAsyncClient | BareStreamClient)
STREAM = "unix:"


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})


async def echo(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    reply, _blobs = await request.app[CLIENT].call(body)
    return web.Response(body=json.dumps(reply).encode(), content_type="application/json")


async def jsonecho(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")


async def v1echo(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    reply, _blobs = await request.app[CLIENT].call(body["inputs"]["value"])
    return web.Response(body=json.dumps(reply).encode(), content_type="application/json")


async def serve(port: int, endpoint: str) -> None:
    app = web.Application(client_max_size=256 * 2**20)
    app[CLIENT] = (await BareStreamClient.connect(endpoint[len(STREAM):])
                   if endpoint.startswith(STREAM) else BareAsyncClient(endpoint))
    app.router.add_get("/hello", hello)
    app.router.add_post("/echo", echo)
    app.router.add_post("/jsonecho", jsonecho)
    app.router.add_post("/v1echo", v1echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        from bench.base_echo import until_signalled  # noqa: PLC0415 - keeps the header short

        await until_signalled()
    finally:
        await runner.cleanup()
        app[CLIENT].close()


if __name__ == "__main__":
    if sys.argv[3:] == ["uvloop"]:
        import uvloop  # only this variant uses it

        uvloop.run(serve(int(sys.argv[1]), sys.argv[2]))
    else:
        asyncio.run(serve(int(sys.argv[1]), sys.argv[2]))
