"""Fault 7: 1,000 malformed HTTP requests to pnsweb, while good requests keep being served.

Requests are written as raw bytes on fresh TCP connections (so paths like
``/v1/jobs/../../etc/passwd`` reach the server unnormalised): bad JSON, wrong content types,
huge and numerous headers, path traversal (plain, ``%2e%2e``, ``%2f``, double-encoded, NUL),
missing, malformed and wrong credentials, bodies over the limit, bad methods, bad query
parameters, broken framing (Content-Length, chunked) and bad request lines. Every reply must
be a 4xx within the deadline, never a 5xx or a hang; and a JSON body for every request that is
valid HTTP. Requests aiohttp's HTTP parser refuses before any application code runs (header or
request line over its limits, broken framing, a method that is not an HTTP token) get aiohttp's
plain-text 400 and a closed connection: that is the one place pnsweb cannot answer in JSON.
Meanwhile a good client (from another address) runs ``echo`` through ``/v1`` and must see no
failure.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
from collections import Counter
from dataclasses import dataclass

from faults.goodload import EXECUTE, GoodLoad
from faults.procs import WEB_USER, Node
from faults.report import Row
from faults.runner import Context

MAX_BODY = 64 * 1024        # pnsweb's max_body for this fault
REPLY_DEADLINE = 10.0
# The bad requests come from another loopback address than the good client's: wrong passwords
# for the good client's user name make pnsweb back that (address, name) off with 429, which
# is the point of the back-off; the good client, elsewhere, must not notice.
ATTACKER = "127.0.0.2"
PARALLEL = 8
GOOD_AUTH = "Basic " + base64.b64encode(f"{WEB_USER[0]}:{WEB_USER[1]}".encode()).decode()


@dataclass(frozen=True)
class Bad:
    kind: str
    raw: bytes


def request(method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
            auth: str | None = GOOD_AUTH, content_type: str | None = "application/json",
            length: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    if length and (body or method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


TRAVERSAL = (
    "/v1/jobs/../../etc/passwd", "/v1/jobs/%2e%2e/%2e%2e/etc/passwd",
    "/v1/jobs/..%2f..%2fetc%2fpasswd", "/v1/jobs/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd/results",
    "/v1/processes/..%2F..%2Fetc%2Fpasswd", "/v1/processes/%252e%252e%252fetc",
    "/v1/jobs/%00", "/v1/jobs/..%5c..%5cwindows", "//etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
    "/v1/jobs/....//....//etc/passwd", "/v0.6/..%2f..%2fetc/passwd", "/v1/processes/..",
    "/v1/jobs/%2e%2e", "/v0.6/output/../../../../etc/shadow", "/v1/processes/.%2e/.%2e/x",
)
BAD_JSON = (b"{", b'{"inputs":', b"nul", b"[1, 2", b"\xff\xfe\x00", b'{"inputs": NaN}',
            b'"just a string"', b'{"inputs": {"value": 1}, "response": "sideways"}',
            b'{"inputs": {"value": 1}, "mode": 7}', b"[]", b"12", b'{"inputs": [1, 2]}',
            b'{"inputs": {"value": 1}, "outputs": {"nope": {}}}', b"{" * 5000 + b"}" * 5000)
# A JSON body without a Content-Type is accepted on purpose (curl-friendly), so it is no fault.
CONTENT_TYPES = ("text/plain", "application/x-www-form-urlencoded", "application/xml",
                 "multipart/form-data; boundary=xyz", "image/png", "application/jsonx")
BAD_AUTH = ("Basic !!!not-base64!!!", "Basic " + base64.b64encode(b"nocolon").decode(),
            "Bearer abc.def.ghi", "Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode(),
            "Basic", "", "Digest username=x", "Basic " + "A" * 6000, "basic  ====")
BAD_METHODS = (("PUT", "/v1/processes"), ("PATCH", "/v1/jobs"), ("DELETE", "/v1/processes/echo"),
               ("TRACE", "/v1"), ("FOO", "/v1/processes"), ("POST", "/v1/processes"),
               ("PUT", EXECUTE), ("CONNECT", "/v1"), ("OPTIONS", "/v1/jobs"))
BAD_QUERIES = ("/v1/jobs?limit=abc", "/v1/jobs?limit=-1", "/v1/jobs?offset=1e99",
               "/v1/jobs?status=bogus", "/v1/jobs?limit=99999999999999999999",
               "/v1/jobs?limit=%00")
RAW = (
    b"GET /v1/processes HTTP/9.9\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"GET /v1/processes HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
    b"POST " + EXECUTE.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n"
    b"Connection: close\r\n\r\n",
    b"POST " + EXECUTE.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 3\r\nConnection: close\r\n\r\nabc",
    b"POST " + EXECUTE.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Connection: close\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"GET /v1/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"G\x01T /v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /v1 HTTP/1.1\r\nHost: x\r\nBad Header Name: y\r\nConnection: close\r\n\r\n",
    b"GET /v1 HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\nConnection: close\r\n\r\n",
)


def plan(count: int, rng: random.Random) -> list[Bad]:
    makers = [
        lambda: Bad("bad JSON", request("POST", EXECUTE, body=rng.choice(BAD_JSON))),
        lambda: Bad("wrong content type", request(
            "POST", EXECUTE, body=b'{"inputs": {"value": 1}}',
            content_type=rng.choice(CONTENT_TYPES))),
        lambda: Bad("path traversal", request("GET", rng.choice(TRAVERSAL))),
        lambda: Bad("path traversal (execute)", request(
            "POST", rng.choice(TRAVERSAL) + "/execution", body=b'{"inputs": {}}')),
        lambda: Bad("malformed credentials", request(
            "POST", EXECUTE, body=b'{"inputs": {"value": 1}}', auth=rng.choice(BAD_AUTH))),
        lambda: Bad("no credentials", request("POST", EXECUTE, body=b"{}", auth=None)),
        lambda: Bad("bad method", request(*rng.choice(BAD_METHODS), body=b"{}")),
        lambda: Bad("bad query", request("GET", rng.choice(BAD_QUERIES))),
        lambda: Bad("unknown path", request("GET", f"/v1/nothing/{rng.randrange(10**6)}")),
        lambda: Bad("unknown job", request("GET", f"/v1/jobs/{rng.randbytes(16).hex()}")),
        lambda: Bad("huge header", request(
            "GET", "/v1/processes", headers={"X-Huge": "h" * rng.choice([9000, 20000, 70000])})),
        lambda: Bad("many headers", request(
            "GET", "/v1/processes", headers={f"X-H{i}": "v" * 100 for i in range(200)})),
        lambda: Bad("huge URL", request("GET", "/v1/jobs/" + "a" * rng.choice([9000, 40000]))),
        lambda: Bad("broken framing or request line", rng.choice(RAW)),
        lambda: Bad("body over the limit", request(
            "POST", EXECUTE, body=b'{"inputs": {"value": "' + b"x" * (MAX_BODY * 3) + b'"}}')),
    ]
    out = [makers[i % len(makers)]() for i in range(count - 30)]
    # wrong passwords cost a real scrypt check each (~80 ms): a bounded few
    out += [Bad("wrong password", request(
        "POST", EXECUTE, body=b"{}",
        auth="Basic " + base64.b64encode(f"{WEB_USER[0]}:guess{i}".encode()).decode()))
        for i in range(15)]
    out += [Bad("unknown user", request(
        "POST", EXECUTE, body=b"{}",
        auth="Basic " + base64.b64encode(f"mallory{i}:x".encode()).decode())) for i in range(15)]
    rng.shuffle(out)
    return out


async def send_raw(port: int, raw: bytes) -> tuple[int | None, dict[str, str], bytes, str]:
    """Write ``raw``, read the reply; (status, headers, body, problem) - problem '' if none."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0)), REPLY_DEADLINE)
    except (OSError, TimeoutError) as exc:
        return None, {}, b"", f"cannot connect: {exc}"
    try:
        try:
            writer.write(raw)
            await writer.drain()
        except ConnectionError:
            pass     # the server may answer and close before reading it all: read the answer
        data = await asyncio.wait_for(reader.read(-1), REPLY_DEADLINE)
    except TimeoutError:
        return None, {}, b"", "no reply (hang)"
    except ConnectionError as exc:
        return None, {}, b"", f"connection reset without a reply ({type(exc).__name__})"
    finally:
        writer.close()
    return parse(data)


def parse(data: bytes) -> tuple[int | None, dict[str, str], bytes, str]:
    head, _, body = data.partition(b"\r\n\r\n")
    if not head:
        return None, {}, b"", "connection closed without a reply"
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ")[1])
    except (IndexError, ValueError):
        return None, {}, b"", f"bad status line {lines[0][:60]!r}"
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return status, headers, body, ""


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


# Kinds that are not valid HTTP/1.1 (aiohttp's parser answers them before pnsweb runs).
NOT_HTTP = frozenset({"huge header", "many headers", "huge URL", "broken framing or request line"})


def judge(status: int | None, headers: dict[str, str], body: bytes, problem: str,
          *, valid_http: bool = True) -> str:
    """'' for a good error reply, else what is wrong with it."""
    if problem:
        return problem
    assert status is not None
    if not 400 <= status < 500:
        return f"status {status}"
    if not valid_http and status == 400:
        return ""
    kind = headers.get("content-type", "").split(";")[0]
    if kind not in ("application/json", "application/problem+json"):
        return f"{status} with content type {kind or 'none'}"
    try:
        json.loads(body)
    except ValueError:
        return f"{status} with a body that is not JSON"
    return ""


def http_garbage(ctx: Context) -> Row:
    row = Row("http", tries=1)
    node = Node(ctx.dir, "home", pnsweb=f"max_body = {MAX_BODY}")
    try:
        node.start_daemon()
        node.start_web()
        asyncio.run(_attack(node, ctx.pick(1000, 1000), row))
        if node.web is None or not node.web.alive():
            row.fail("pnsweb died")
    finally:
        node.stop()
    return row


async def _attack(node: Node, count: int, row: Row) -> None:
    bad = plan(count, random.Random(11))
    stop = asyncio.Event()
    load = GoodLoad(node.url, loops=2)
    good = asyncio.create_task(load.run(stop))
    statuses: Counter[str] = Counter()
    wrong: Counter[str] = Counter()
    queue: asyncio.Queue[Bad] = asyncio.Queue()
    for item in bad:
        queue.put_nowait(item)

    async def sender() -> None:
        while not queue.empty():
            item = queue.get_nowait()
            status, headers, body, problem = await send_raw(node.web_port, item.raw)
            statuses[str(status)] += 1
            valid_http = item.kind not in NOT_HTTP and not (
                item.kind == "bad method" and status == 400)   # a method that is no token
            verdict = judge(status, headers, body, problem, valid_http=valid_http)
            if verdict:
                wrong[f"{item.kind}: {verdict}"] += 1

    try:
        await asyncio.gather(*(sender() for _ in range(PARALLEL)))
    finally:
        stop.set()
        await good
    sent, failures, latencies = load.sent, load.failures, load.latencies
    row.sent += len(bad) + sent
    row.expected = len(bad) - sum(wrong.values())
    for text, n in wrong.most_common():
        row.fail(f"{n} x {text}", count=n)
    row.note("statuses: " + ", ".join(f"{s} x{n}" for s, n in sorted(statuses.items())))
    lat = sorted(latencies)
    row.note(f"good client: {sent} requests, {len(failures)} failed"
             + (f", p50 {lat[len(lat) // 2] * 1000:.1f} ms, p99 "
                f"{lat[int(len(lat) * .99)] * 1000:.1f} ms" if lat else ""))
    for text in failures[:3]:
        row.fail(f"good client: {text}", count=0)
    row.failed += len(failures)
