"""Request bodies: limits before and after authentication, parsing off the event loop, and
values the daemon hop cannot carry refused with a 400 on both faces."""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from typing import Any

import pytest
from aiohttp import web

from pnsweb import bodies
from pnsweb.app import create_app
from pnsweb.keys import BODY_PARSER
from protocols.errors import ErrorCode, ProtocolError
from tests.pnsweb.fakes import ADMIN, basic
from tests.pnsweb.fakes_v1 import AUTH, demo_daemon, settings
from tests.waiting import until

PAD = 80 << 10      # a string this long puts a body above bodies.INLINE_BYTES (the thread path)


def _app(**changes: Any) -> web.Application:
    daemon, _book = demo_daemon()
    return create_app(settings(**changes), client=daemon)


@pytest.fixture
async def client(aiohttp_client: Any) -> Any:
    return await aiohttp_client(_app())


def _padded(text: str) -> str:
    """``text`` (a JSON value) in an array with a long string: the same value, a large body."""
    return f'["{"x" * PAD}", {text}]'


# -- limits -------------------------------------------------------------------------------------

async def test_anonymous_body_over_the_anonymous_limit_is_413(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app(max_anonymous_body=1000))
    resp = await client.post("/v0.6/echo", data=json.dumps(["x" * 1000]))
    assert resp.status == 413
    body = await resp.json()
    assert body["error"] == "Payload too large." and "1000 bytes" in body["message"]
    ok = await client.post("/v0.6/echo", data=json.dumps(["x" * 900]))
    assert ok.status == 200


async def test_anonymous_limit_defaults_to_one_mebibyte(client: Any) -> None:
    resp = await client.post("/v0.6/echo", data=json.dumps(["x" * (1 << 20)]))
    assert resp.status == 413


async def test_chunked_anonymous_body_is_counted_as_it_comes(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app(max_anonymous_body=1000))

    async def chunks() -> Any:
        for _ in range(20):
            yield b'"' + b"x" * 98 + b'"'

    resp = await client.post("/v0.6/echo", data=chunks())
    assert resp.status == 413


async def test_authenticated_caller_may_send_up_to_max_body(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app(max_anonymous_body=1000, max_body=100_000))
    payload = {"inputs": {"value": "x" * 50_000}}
    resp = await client.post("/v1/processes/echo/execution", json=payload, headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"value": "x" * 50_000}
    resp = await client.post("/v1/processes/echo/execution",
                             json={"inputs": {"value": "x" * 100_000}}, headers=AUTH)
    assert resp.status == 413


async def test_wrong_credentials_are_refused_before_the_body_is_read(
        aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app(max_anonymous_body=1000))
    resp = await client.post("/v1/processes/echo/execution", headers=basic((ADMIN[0], "no")),
                             json={"inputs": {"value": "x" * 50_000}})
    assert resp.status == 401


# -- the loop keeps serving -------------------------------------------------------------------

async def test_a_large_body_is_parsed_while_the_loop_serves_others(aiohttp_client: Any) -> None:
    app = _app(max_anonymous_body=8 << 20)
    client = await aiohttp_client(app)
    many_values = "[" + "[]," * ((2 << 20) // 3) + "0]"     # the costliest shape to parse
    large = asyncio.create_task(client.post("/v0.6/echo", data=many_values))
    await until(lambda: app[BODY_PARSER].busy == 1)
    small = await client.get("/healthz")
    assert small.status == 200
    assert not large.done(), "the small request waited for the large body's parse"
    assert app[BODY_PARSER].busy == 1
    resp = await large
    assert resp.status == 200
    assert len((await resp.json())["result"]) == (2 << 20) // 3 + 1


@pytest.mark.parametrize("shape", ["[" + "{}," * 1_000_000 + "{}]", "[" + "1," * 1_000_000 + "1]",
                                   '{"a": [' + "[0]," * 500_000 + "[0]]}"],
                         ids=["objects", "flat numbers", "nested"])
async def test_a_body_with_more_values_than_the_cap_is_413_before_it_is_all_parsed(
        shape: str) -> None:
    with pytest.raises(bodies.TooManyValues, match="more than 1000000 JSON values"):
        bodies.decode(shape.encode())
    assert len(bodies.decode(b"[" + b"0," * 999_998 + b"0]")) == 999_999    # just within


async def test_too_many_values_is_413_in_json(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app(max_anonymous_body=4 << 20))
    resp = await client.post("/v0.6/echo", data="[" + "1," * 1_000_001 + "1]")
    assert resp.status == 413
    assert "JSON values" in (await resp.json())["message"]


async def test_large_parses_are_bounded_per_process() -> None:
    parser = bodies.BodyParser(slots=1)
    raw = _padded('"one"').encode()
    results = await asyncio.gather(parser.decode(raw), parser.decode(raw))
    assert [value[1] for value in results] == ["one", "one"] and parser.busy == 0


# -- values -------------------------------------------------------------------------------------

BAD_VALUES = {
    "deep nesting": "[" * 5000 + "]" * 5000,
    "nesting beyond the limit": "[" * 129 + "]" * 129,
    "1e400": "1e400",
    "-1e400": "[-1e400]",
    "integer beyond 64 bits": str(2**64),
    "integer below -2**63": str(-(2**63) - 1),
    "huge integer": "1" * 5000,
    "lone surrogate": '"\\ud800"',
    "lone surrogate in a key": '{"\\udc00": 1}',
    "NaN": "NaN",
    "Infinity": "[Infinity]",
    "-Infinity": "{\"a\": -Infinity}",
    "not JSON": "{'a': 1}",
}
GOOD_VALUES = {
    "largest unsigned": str(2**64 - 1),
    "smallest signed": str(-(2**63)),
    "nesting at the limit": "[" * 127 + "]" * 127,
    "surrogate pair": '"\\ud83d\\ude00"',
    "large float": "1.7e308",
}


CHECKED: dict[str, tuple[Any, str]] = {     # a decoded value and what its refusal says
    "1e400": (float("inf"), "64-bit float"),
    "integer beyond 64 bits": (2**64, "beyond 64 bits"),
    "integer below -2**63": (-(2**63) - 1, "beyond 64 bits"),
    "lone surrogate": ("\ud800", "surrogate"),
    "lone surrogate in a key": ({"ok": 1, "\udc00": 1}, "surrogate"),
    "nesting beyond the limit": (json.loads("[" * 129 + "]" * 129), "nested deeper than 128"),
}


@pytest.mark.parametrize(("value", "says"), CHECKED.values(), ids=CHECKED.keys())
def test_check_value_finds_each_refusal_wherever_it_lies(value: Any, says: str) -> None:
    for where in (value, [value], {"a": [1, "x", {"b": value}]}, [[0.5] * 50, [[True, value]]]):
        with pytest.raises(bodies.BadBody, match=says):
            bodies.check_value(where)


def test_check_value_takes_what_the_daemon_hop_carries() -> None:
    nested = json.loads("[" * 126 + '{"k": [2, "\\ud83d\\ude00"]}' + "]" * 126)    # 128 levels
    for value in (None, 1, -(2**63), 2**64 - 1, 1.7e308, "é", {"a": [1, {"b": "c"}]}, nested):
        bodies.check_value(value)


@pytest.mark.parametrize("padded", [False, True], ids=["inline", "thread"])
@pytest.mark.parametrize("text", BAD_VALUES.values(), ids=BAD_VALUES.keys())
async def test_bad_values_are_400_on_v06(client: Any, text: str, padded: bool) -> None:
    resp = await client.post("/v0.6/echo", data=_padded(text) if padded else text)
    assert resp.status == 400, await resp.text()
    body = json.loads(await resp.text())      # strict: the error itself is JSON
    assert body["error"] == "Bad request." and body["message"].startswith("the body ")


@pytest.mark.parametrize("text", BAD_VALUES.values(), ids=BAD_VALUES.keys())
async def test_bad_values_are_400_on_v1(client: Any, text: str) -> None:
    resp = await client.post("/v1/processes/echo/execution", headers=AUTH,
                             data=f'{{"inputs": {{"value": {text}}}}}',
                             skip_auto_headers=["Content-Type"])
    assert resp.status == 400, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert json.loads(await resp.text())["detail"].startswith("the body ")


@pytest.mark.parametrize("padded", [False, True], ids=["inline", "thread"])
@pytest.mark.parametrize("text", GOOD_VALUES.values(), ids=GOOD_VALUES.keys())
async def test_values_at_the_edges_are_accepted(client: Any, text: str, padded: bool) -> None:
    resp = await client.post("/v0.6/echo", data=_padded(text) if padded else text)
    assert resp.status == 200, await resp.text()
    result = json.loads(await resp.text())["result"]
    assert (result[1] if padded else result) == json.loads(text)


async def test_invalid_utf8_is_400(client: Any) -> None:
    resp = await client.post("/v0.6/echo", data=b'"\xed\xa0\x80"')     # an encoded surrogate
    assert resp.status == 400
    assert "UTF-8" in (await resp.json())["message"]


# -- every reply is JSON ------------------------------------------------------------------------

def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in a reply")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [1.0, float("-inf")]])
async def test_a_daemon_reply_json_cannot_hold_is_502_in_json(
        aiohttp_client: Any, value: Any) -> None:
    daemon, _book = demo_daemon()
    daemon.reply("run", {"job": "j1", "result": value})
    client = await aiohttp_client(create_app(settings(), client=daemon))
    resp = await client.post("/v1/processes/echo/execution", headers=AUTH,
                             json={"inputs": {"value": 1}})
    assert resp.status == 502
    assert "cannot be written as JSON" in _strict(await resp.text())["detail"]
    daemon.reply("pts.hook", {"result": {"command": ["initPTS"], "returncode": value,
                                         "stdout": "", "stderr": ""}})
    resp = await client.put("/v0.6/init", headers=AUTH)
    assert resp.status == 502, await resp.text()
    assert _strict(await resp.text())["error"] == "Processing failed."


async def test_a_body_the_client_cannot_pack_is_400_not_500(aiohttp_client: Any) -> None:
    daemon, _book = demo_daemon()

    def unpackable(body: Any) -> Any:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "body cannot be encoded: too deep")

    daemon.on("run", unpackable)
    client = await aiohttp_client(create_app(settings(), client=daemon))
    resp = await client.post("/v1/processes/echo/execution", headers=AUTH,
                             json={"inputs": {"value": 1}})
    assert resp.status == 400
    assert "cannot be encoded" in (await resp.json())["detail"]


# -- memory -------------------------------------------------------------------------------------

@pytest.mark.parametrize("chunked", [False, True])
async def test_a_large_body_is_held_at_most_twice_while_it_is_read_and_parsed(
        aiohttp_client: Any, chunked: bool) -> None:
    """Read into one buffer (never pieces joined afterwards) and the buffer emptied once its
    text is decoded: bytes, text and value are never all held at once (three times the body,
    with the join four, as it was)."""
    size = 4 << 20
    app = _app(max_anonymous_body=2 * size, max_body=2 * size)
    peaks: list[int] = []

    async def probe(request: web.Request) -> web.Response:
        tracemalloc.start()
        try:
            value = await bodies.read_json_body(request)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        return web.json_response({"length": len(value["value"])})

    app.router.add_post("/probe", probe)
    client = await aiohttp_client(app)
    body = json.dumps({"value": "v" * size}).encode()

    async def pieces() -> Any:
        for start in range(0, len(body), 1 << 20):
            yield body[start:start + (1 << 20)]

    resp = await client.post("/probe", data=pieces() if chunked else body)
    assert resp.status == 200 and (await resp.json()) == {"length": size}
    assert peaks[0] < 2.5 * size, f"{peaks[0] / size:.2f} times the body held at once"
