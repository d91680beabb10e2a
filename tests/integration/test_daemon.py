"""The daemon over real sockets: every operation, and every bad input answered clearly."""

from __future__ import annotations

import asyncio
import gc

import msgpack
import pytest
import structlog
import zmq
import zmq.asyncio
from structlog.testing import capture_logs

from protocols.client import TRACE, AsyncClient, Client
from protocols.codec import Codec, read_refusal
from protocols.errors import ClientTimeout, ErrorCode, RemoteError
from protocols.version import MAGIC
from tests.integration.conftest import Running

pytestmark = pytest.mark.slow


async def test_ping_status_and_pts_listing(client: AsyncClient) -> None:
    pong = await client.call("ping", {})
    assert pong["protocol"] == 1
    status = await client.call("status", {})
    assert status["pts"]["echo"]["state"] == "ready"
    names = {p["name"] for p in (await client.call("pts.list", {}))["pts"]}
    assert {"echo", "hello", "testcalc", "sleep"} <= names
    described = await client.call("pts.describe", {"name": "echo"})
    assert described["spec"]["entry"] == "pnsd.demo:echo"


async def test_run_returns_the_result_and_records_a_job(client: AsyncClient) -> None:
    reply = await client.call("run", {"pts": "echo", "input": {"x": 1, "b": b"\x00"}})
    assert reply["result"] == {"x": 1, "b": b"\x00"}
    job = (await client.call("job.status", {"job": reply["job"]}))["job"]
    assert job["status"] == "successful" and job["sync"] is True


async def test_many_requests_in_flight_on_one_socket(client: AsyncClient) -> None:
    replies = await asyncio.gather(
        *(client.call("run", {"pts": "echo", "input": i}) for i in range(200)))
    assert [r["result"] for r in replies] == list(range(200))


async def test_large_payload_round_trips_byte_identical(client: AsyncClient) -> None:
    payload = bytes(range(256)) * 4096 * 4  # 4 MiB
    reply = await client.call("run", {"pts": "echo", "input": payload})
    assert reply["result"] == payload


async def test_process_mode_hello_runs_the_real_script(client: AsyncClient) -> None:
    reply = await client.call("run", {"pts": "hello", "input": {"infile": "stranger"}})
    assert reply["result"]["outputs"]["outfile"].startswith("hello stranger! From ")
    assert reply["result"]["returncode"] == 0


@pytest.mark.parametrize(("body", "code"), [
    ({"pts": "nope", "input": 1}, ErrorCode.NOT_FOUND),
    ({"input": 1}, ErrorCode.BAD_REQUEST),
    ({"pts": "echo"}, ErrorCode.BAD_REQUEST),
    ({"pts": "echo", "input": 1, "timeout": -1}, ErrorCode.BAD_REQUEST),
    ({"pts": "fail", "input": 1}, ErrorCode.PTS_ERROR),
    ({"pts": "hello", "input": {"../x": "a"}}, ErrorCode.BAD_REQUEST),
    ([1, 2], ErrorCode.BAD_REQUEST),
])
async def test_bad_run_requests_get_clear_errors(client: AsyncClient, body: object,
                                                 code: str) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.call("run", body)
    assert caught.value.code == code and caught.value.message
    assert "Traceback" not in caught.value.message
    assert (await client.call("run", {"pts": "echo", "input": 2}))["result"] == 2


async def test_a_run_over_its_timeout_fails_with_timeout(client: AsyncClient) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.call("run", {"pts": "sleep", "input": {"seconds": 30}, "timeout": 0.2})
    assert caught.value.code == ErrorCode.TIMEOUT


async def test_unknown_operation_is_unknown_op(client: AsyncClient) -> None:
    with pytest.raises(RemoteError) as caught:
        await client.call("no.such.op", {})
    assert caught.value.code == ErrorCode.UNKNOWN_OP


async def test_async_submit_then_result_and_watch(client: AsyncClient) -> None:
    job = (await client.call("submit", {"pts": "sleep", "input": {"seconds": 0.2}}))["job"]
    assert job["status"] == "accepted"
    events = [e async for e in client.stream("job.watch", {"job": job["id"]}, timeout=10)]
    assert events[-1]["status"] == "successful"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    result = await client.call("job.result", {"job": job["id"]})
    assert result["result"] == {"slept": 0.2}


async def test_result_of_an_unfinished_job_is_not_ready(client: AsyncClient) -> None:
    job = (await client.call("submit", {"pts": "sleep", "input": {"seconds": 30}}))["job"]
    with pytest.raises(RemoteError) as caught:
        await client.call("job.result", {"job": job["id"]})
    assert caught.value.code == ErrorCode.NOT_READY
    cancelled = (await client.call("job.cancel", {"job": job["id"]}))["job"]
    assert cancelled["id"] == job["id"]
    events = [e async for e in client.stream("job.watch", {"job": job["id"]}, timeout=10)]
    assert events[-1]["status"] == "dismissed"


async def test_malformed_job_ids_and_unknown_jobs(client: AsyncClient) -> None:
    for job, code in (("../etc", ErrorCode.BAD_REQUEST), ("0" * 32, ErrorCode.NOT_FOUND)):
        with pytest.raises(RemoteError) as caught:
            await client.call("job.status", {"job": job})
        assert caught.value.code == code


async def raw_exchange(running: Running, frames: list[bytes], *, wait: float = 2.0
                       ) -> list[bytes] | None:
    """Send raw frames from a fresh DEALER; the reply's frames, or None if none came."""
    context = zmq.asyncio.Context.instance()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(running.settings.endpoint)
    try:
        await socket.send_multipart(frames)
        if await socket.poll(int(wait * 1000)):
            return list(await socket.recv_multipart())
        return None
    finally:
        socket.close()


async def test_garbage_frames_get_no_reply_and_the_daemon_carries_on(
        running: Running, client: AsyncClient) -> None:
    assert await raw_exchange(running, [b"garbage"], wait=0.3) is None
    assert (await client.call("ping", {}))["protocol"] == 1


@pytest.mark.parametrize(("mutate", "code"), [
    ("unsigned", ErrorCode.AUTH), ("wrong_key", ErrorCode.AUTH), ("version", ErrorCode.VERSION),
    ("stale", ErrorCode.REPLAY), ("body", ErrorCode.MALFORMED),
])
async def test_refused_messages_are_answered_with_their_code(
        running: Running, client: AsyncClient, mutate: str, code: str) -> None:
    key = running.key
    if mutate == "unsigned":
        frames = Codec(b"").encode("ping.req", {})
    elif mutate == "wrong_key":
        frames = Codec(b"x" * 64).encode("ping.req", {})
    elif mutate == "stale":
        frames = Codec(key, clock=lambda: 1000.0).encode("ping.req", {})
    elif mutate == "version":
        codec = Codec(key)
        header = msgpack.packb([7, "v" * 32, "ping.req", None, __import__("time").time()])
        frames = [MAGIC, codec.signer.sign([MAGIC, header, b"\x80"]), header, b"\x80"]
    else:
        codec = Codec(key)
        header = msgpack.packb([1, "m" * 32, "ping.req", None, __import__("time").time()])
        frames = [MAGIC, codec.signer.sign([MAGIC, header, b"\xc1"]), header, b"\xc1"]
    reply = await raw_exchange(running, frames)
    assert reply is not None
    if code == ErrorCode.AUTH:     # refused unauthenticated: answered unsigned
        assert reply[1] == b""
        message = read_refusal(reply)
    else:
        message = Codec(key, guard_replay=False).decode(reply)
    assert message is not None
    assert message.type == "error" and message.body["code"] == code
    assert (await client.call("ping", {}))["protocol"] == 1
    refused = (await client.call("status", {}))["refusals"]["refused"]
    assert refused == {code: 1}


async def test_replayed_message_is_refused(running: Running) -> None:
    frames = Codec(running.key).encode("ping.req", {})
    first = await raw_exchange(running, frames)
    second = await raw_exchange(running, frames)
    assert first is not None and second is not None
    assert Codec(running.key, guard_replay=False).decode(second).body["code"] == ErrorCode.REPLAY


async def test_oversized_message_is_too_large(tmp_path: object, running: Running,
                                              client: AsyncClient) -> None:
    limit = running.settings.max_message_bytes
    with pytest.raises(RemoteError) as caught:
        await client.call("run", {"pts": "echo", "input": b"x" * (limit + 10)})
    assert caught.value.code == ErrorCode.TOO_LARGE
    assert (await client.call("ping", {}))["protocol"] == 1


async def test_client_timeout_is_typed(running: Running) -> None:
    async with running.client() as client:
        with pytest.raises(ClientTimeout):
            await client.call("run", {"pts": "sleep", "input": {"seconds": 5}}, timeout=0.2)


async def test_unreachable_daemon_is_unavailable_at_once(tmp_path: object) -> None:
    async with AsyncClient(f"ipc://{tmp_path}/none.sock") as client:
        with pytest.raises(RemoteError) as caught:
            await client.call("ping", {}, timeout=30)
    assert caught.value.code == ErrorCode.UNAVAILABLE


async def test_a_short_timeout_to_an_unreachable_daemon_leaves_no_stray_error(
    tmp_path: object,
) -> None:
    """The call's timeout starts once the request is sent: no orphaned timeout error."""
    stray: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: stray.append(context))
    async with AsyncClient(f"ipc://{tmp_path}/none.sock") as client:
        with pytest.raises(RemoteError) as caught:
            await client.call("ping", {}, timeout=0.05)
    code = caught.value.code
    del caught           # its traceback holds the call's frame, and so its future
    gc.collect()
    assert code == ErrorCode.UNAVAILABLE and stray == []


async def test_blocking_client_keeps_many_requests_in_flight(running: Running) -> None:
    def exercise() -> None:
        with Client(running.settings.endpoint, key=running.key, timeout=30) as client:
            slow = client.send("run", {"pts": "sleep", "input": {"seconds": 0.3}})
            fast = [client.send("run", {"pts": "echo", "input": i}) for i in range(50)]
            # collected in reverse order: replies that arrive for others are kept for them
            assert [p.result()["result"] for p in reversed(fast)] == list(range(49, -1, -1))
            assert slow.result()["result"] == {"slept": 0.3}
            job = client.call("submit", {"pts": "sleep", "input": {"seconds": 0.1}})["job"]["id"]
            events = list(client.stream("job.watch", {"job": job}, timeout=10))
            assert events[-1]["status"] == "successful"
            with pytest.raises(ClientTimeout):
                client.call("run", {"pts": "sleep", "input": {"seconds": 5}}, timeout=0.2)
            with pytest.raises(RemoteError) as caught:
                client.call("run", {"pts": "nope", "input": 1})
            assert caught.value.code == ErrorCode.NOT_FOUND

    await asyncio.to_thread(exercise)


async def test_a_callers_trace_id_reaches_the_daemons_log_lines(client: AsyncClient) -> None:
    token = TRACE.set("web-request-7")
    try:
        with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
            await client.call("run", {"pts": "echo", "input": 1})
    finally:
        TRACE.reset(token)
    finished = [e for e in logs if e["event"] == "job_finished"]
    assert finished and finished[0]["trace"] == "web-request-7"
