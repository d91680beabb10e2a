"""The daemon's stream door end to end: a real pnsd, its Unix stream socket, real clients.

Seams covered: the door's socket beside ``ipc://`` (where, how private, replaced when stale,
removed on shutdown, in-flight calls answered before it closes); the signature check behind it
(a wrong key refused at once and counted, a forged but well-framed message answered with an
``auth`` error on a connection that stays open); the record layout at the daemon's end (a
record over the limit, garbage, a message that is not PNS, frames that do not fill their record:
counted as ``stream_broken`` and closed; a record cut short by the peer: not counted, daemon
serving); a peer that does not read (its replies over the unread cap dropped whole, the others
served); :class:`protocols.streamclient.StreamClient` across a daemon restart (transparent) and a
daemon killed mid-call (``unavailable`` at once, not a timeout); and pnsweb's client of a local
daemon (:func:`pnsweb.nodes.daemon_client`) taking the door.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import stat
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from pnsd.keyfile import load_or_create_key
from pnsd.streamdoor import BROKEN, UNREAD_FACTOR
from pnsweb.settings import WebSettings
from protocols.codec import Codec, read_refusal
from protocols.errors import ErrorCode, RemoteError
from protocols.messages import ERROR, reply_type, request_type
from protocols.session import Session
from protocols.stdioframe import LENGTH, MARKER, SLACK, FrameReader, pack_bytes
from protocols.streamclient import StreamClient, stream_door
from tests.integration.conftest import (
    DaemonProcess,
    Running,
    pnsweb_client,
    running_daemon,
    settings_for,
    spawn_daemon,
    spawned_daemon,
)
from tests.waiting import until

IO_TIMEOUT = 10.0       # any single read or write on a raw socket
LIMIT = 2**20           # the in-process daemon's max_message_bytes (the default is 64 MiB)

# No demo PTS (their worker pools make a start slow): the two the tests need, inproc.
PTS = """
[pts.echo]
mode = "inproc"
entry = "pnsd.demo:echo"
inline = true
concurrency = 64
queue = 1024

[pts.sleep]
mode = "inproc"
entry = "pnsd.demo:sleep"
concurrency = 8
timeout = 600
"""


def config(pnsd: str = "") -> str:
    """The ``[pnsd]`` keys ``pnsd`` (one per line), then the PTS."""
    return f"demo = false\n{pnsd}{PTS}"


def door_path(endpoint: str) -> Path:
    return Path(stream_door(endpoint).removeprefix("unix://"))


def mode_of(path: Path) -> int:
    return path.stat().st_mode


def door_client(settings: Any, key: bytes, **kwargs: Any) -> StreamClient:
    return StreamClient(stream_door(settings.endpoint), key=key, **kwargs)


def process_client(process: DaemonProcess, timeout: float) -> StreamClient:
    """A client of a pnsd process's door, with its key."""
    settings = process.settings
    return door_client(settings, load_or_create_key(settings.key_file, create=False),
                       timeout=timeout)


async def refused(client: StreamClient, reason: str) -> int:
    """How many messages the daemon has refused for ``reason`` (its ``status`` reply)."""
    status = await client.call("status", {})
    return int(status["refusals"]["refused"].get(reason, 0))


async def sleeping(client: StreamClient) -> bool:
    """The sleep PTS has a run running."""
    status = await client.call("status", {})
    return bool(status["pts"]["sleep"]["running"] >= 1)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    settings = settings_for(tmp_path / "home", config(f"max_message_bytes = {LIMIT}\n"))
    async with running_daemon(settings) as running:
        yield running


@pytest.fixture
async def client(node: Running) -> AsyncIterator[StreamClient]:
    async with door_client(node.settings, node.key, timeout=30.0, max_bytes=LIMIT) as client:
        yield client


@pytest.fixture
def process(tmp_path: Path) -> Iterator[DaemonProcess]:
    """A pnsd process (for a restart or a kill), killed at the end if still running."""
    with spawned_daemon(tmp_path / "home", config()) as running:
        yield running


class RawPeer:
    """A plain Unix stream socket to the door. Its blocking calls run in a thread: the
    in-process daemon serves from this test's event loop."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(IO_TIMEOUT)
        self.sock.connect(str(path))

    def close(self) -> None:
        self.sock.close()

    async def send(self, data: bytes) -> None:
        await asyncio.to_thread(self.sock.sendall, data)

    async def closed_by_daemon(self) -> bool:
        """Read until the daemon closes the connection (True); fail on IO_TIMEOUT."""
        def drain() -> bool:
            try:
                while self.sock.recv(65536):
                    pass
            except ConnectionResetError:
                pass
            return True
        return await asyncio.to_thread(drain)

    async def messages(self, reader: FrameReader, count: int) -> list[list[bytes]]:
        """The next ``count`` messages the daemon sends."""
        def read() -> list[list[bytes]]:
            got: list[list[bytes]] = []
            while len(got) < count:
                data = self.sock.recv(65536)
                assert data, "the daemon closed the connection"
                got.extend(reader.feed(data))
            return got
        return await asyncio.to_thread(read)

    async def until_eof(self, reader: FrameReader) -> list[list[bytes]]:
        """Every message the daemon sends before it closes the connection."""
        def read() -> list[list[bytes]]:
            got: list[list[bytes]] = []
            while data := self.sock.recv(1 << 20):
                got.extend(reader.feed(data))
            return got
        return await asyncio.to_thread(read)


# 1. the socket

async def test_a_call_over_the_door_works_and_its_socket_is_beside_ipc_in_a_private_dir(
        node: Running, client: StreamClient) -> None:
    assert (await client.call("ping", {}))["protocol"] == 1
    assert (await client.call("run", {"pts": "echo", "input": {"a": [1, 2]}}))["result"] == {
        "a": [1, 2]}
    ipc = Path(node.settings.endpoint.removeprefix("ipc://"))
    door = door_path(node.settings.endpoint)
    assert door == ipc.with_name(ipc.name + ".stream")
    assert stat.S_ISSOCK(mode_of(ipc)) and stat.S_ISSOCK(mode_of(door))
    assert stat.S_IMODE(mode_of(door.parent)) == 0o700


# 2. a wrong key

async def test_a_wrong_key_is_refused_at_once_and_counted_and_the_daemon_keeps_serving(
        node: Running, client: StreamClient) -> None:
    before = await refused(client, ErrorCode.AUTH)
    async with door_client(node.settings, os.urandom(32), timeout=30.0) as stranger:
        started = time.monotonic()
        with pytest.raises(RemoteError) as caught:
            await stranger.call("ping", {})
        assert caught.value.code == ErrorCode.AUTH
        assert time.monotonic() - started < 5.0     # answered, not timed out
        assert await refused(client, ErrorCode.AUTH) == before + 1
        assert (await client.call("run", {"pts": "echo", "input": 7}))["result"] == 7


# 3. a restart while idle (slow: these two start pnsd processes)

@pytest.mark.slow
async def test_a_client_idle_across_a_daemon_restart_is_served_without_an_error(
        process: DaemonProcess) -> None:
    async with process_client(process, timeout=30.0) as client:
        assert (await client.call("run", {"pts": "echo", "input": 1}))["result"] == 1
        # in a thread: the client's loop runs meanwhile, as pnsweb's does
        assert await asyncio.to_thread(process.terminate, 60.0) == 0
        again = await asyncio.to_thread(spawn_daemon, process.home, config())
        try:
            assert (await client.call("run", {"pts": "echo", "input": 2}))["result"] == 2
        finally:
            await asyncio.to_thread(again.terminate, 60.0)


# 4. a drop mid-call

@pytest.mark.slow
async def test_a_daemon_killed_mid_call_fails_the_call_at_once_as_unavailable(
        process: DaemonProcess) -> None:
    async with process_client(process, timeout=60.0) as client:
        call = asyncio.create_task(client.call("run", {"pts": "sleep", "input": {"seconds": 30}}))
        await until(lambda: sleeping(client), timeout=20, every=0.05)
        killed = time.monotonic()
        os.killpg(process.process.pid, signal.SIGKILL)
        with pytest.raises(RemoteError) as caught:
            await asyncio.wait_for(call, timeout=30)
        assert time.monotonic() - killed < 15.0
        assert caught.value.code == ErrorCode.UNAVAILABLE
        assert "was lost" in caught.value.message


# 5. broken streams

def record(body: bytes) -> bytes:
    return LENGTH.pack(len(body)) + body


def frames_of(*frames: bytes) -> bytes:
    return b"".join(LENGTH.pack(len(frame)) + frame for frame in frames)


BROKEN_STREAMS = {
    "over_the_limit": LENGTH.pack(LIMIT + SLACK + 1),   # refused on its length alone
    "garbage": b"hello world\n",
    "not_a_pns_message": record(frames_of(b"XYZ", b"a", b"b", b"c")),
    "a_frame_overruns_its_record": record(frames_of(MARKER) + LENGTH.pack(1000) + b"x" * 10),
    "the_record_ends_inside_a_frame_length": record(frames_of(MARKER, b"a", b"b", b"c") + b"\0\0"),
    "too_few_frames": record(frames_of(MARKER, b"a")),
}


@pytest.mark.parametrize("stream", BROKEN_STREAMS.values(), ids=BROKEN_STREAMS.keys())
async def test_a_broken_stream_is_closed_and_counted_and_others_are_served(
        node: Running, client: StreamClient, stream: bytes) -> None:
    before = await refused(client, BROKEN)
    peer = RawPeer(door_path(node.settings.endpoint))
    try:
        await peer.send(stream)
        assert await peer.closed_by_daemon()
    finally:
        peer.close()
    assert await refused(client, BROKEN) == before + 1
    assert (await client.call("run", {"pts": "echo", "input": 5}))["result"] == 5


async def test_a_record_cut_short_by_its_peer_is_not_a_refusal_and_others_are_served(
        node: Running, client: StreamClient) -> None:
    session = Session(node.key, max_bytes=LIMIT, skew=60.0, local=True)
    _msg_id, frames = session.request("ping", {})
    whole = pack_bytes(frames)
    peer = RawPeer(door_path(node.settings.endpoint))
    try:
        await peer.send(whole[:len(whole) // 2])
        peer.sock.shutdown(socket.SHUT_WR)
        assert await peer.closed_by_daemon()
    finally:
        peer.close()
    assert await refused(client, BROKEN) == 0
    assert (await client.call("run", {"pts": "echo", "input": 6}))["result"] == 6


# 6. a forged message, well framed

async def test_a_wrong_signature_is_answered_auth_and_the_connection_stays_open(
        node: Running, client: StreamClient) -> None:
    before = await refused(client, ErrorCode.AUTH)
    forger = Codec(os.urandom(32), local=True)
    forged = forger.encode(request_type("ping"), {}, msg_id="forged-1")
    session = Session(node.key, max_bytes=LIMIT, skew=60.0, local=True,
                      take_unsigned=True)
    reader = FrameReader(LIMIT + SLACK)
    peer = RawPeer(door_path(node.settings.endpoint))
    try:
        await peer.send(pack_bytes(forged))
        [answer] = await peer.messages(reader, 1)
        refusal = read_refusal(answer)
        assert refusal is not None and refusal.type == ERROR and refusal.re == "forged-1"
        assert refusal.body["code"] == ErrorCode.AUTH
        assert answer[1] == b""     # unsigned: the daemon signs nothing for a stranger
        msg_id, frames = session.request("ping", {})
        await peer.send(pack_bytes(frames))
        [reply] = await peer.messages(reader, 1)
        message = session.read(reply)
        assert message is not None and message.re == msg_id
        assert message.type == reply_type("ping") and message.body["protocol"] == 1
        assert reader.pending() == 0
    finally:
        peer.close()
    assert await refused(client, ErrorCode.AUTH) == before + 1
    assert await refused(client, BROKEN) == 0


# 6b. a message over the limit, within the records' slack

async def test_a_message_over_the_limit_within_the_slack_is_answered_too_large(
        node: Running, client: StreamClient) -> None:
    before = await refused(client, ErrorCode.TOO_LARGE)
    session = Session(node.key, max_bytes=4 * LIMIT, skew=60.0, local=True, take_unsigned=True)
    big_id, big = session.request("run", {"pts": "echo", "input": os.urandom(LIMIT + LIMIT // 2)})
    reader = FrameReader(LIMIT + SLACK)
    peer = RawPeer(door_path(node.settings.endpoint))
    try:
        await peer.send(pack_bytes(big))
        [answer] = await peer.messages(reader, 1)
        refusal = read_refusal(answer)    # refused before its signature is checked: unsigned
        assert refusal is not None and refusal.re == big_id
        assert refusal.body["code"] == ErrorCode.TOO_LARGE
        msg_id, frames = session.request("run", {"pts": "echo", "input": "small"})
        await peer.send(pack_bytes(frames))
        [reply] = await peer.messages(reader, 1)
        message = session.read(reply)
        assert message is not None and message.re == msg_id
        assert message.body["result"] == "small"
    finally:
        peer.close()
    assert await refused(client, ErrorCode.TOO_LARGE) == before + 1
    assert await refused(client, BROKEN) == 0


# 7. a peer that does not read

SMALL_LIMIT = 128 * 1024    # room for a 64 KiB result (handlers.ENVELOPE is kept for the rest)
PAYLOAD = 50_000
REQUESTS = 150              # 7.5 MB of replies: far over UNREAD_FACTOR * SMALL_LIMIT (2 MiB)


async def test_a_peer_that_does_not_read_loses_whole_replies_and_stalls_no_one(
        tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", config(
        f"max_message_bytes = {SMALL_LIMIT}\nrecord_sync_runs = false\n"))
    async with running_daemon(settings) as node, \
            door_client(settings, node.key, timeout=30.0, max_bytes=SMALL_LIMIT) as other:
        session = Session(node.key, max_bytes=SMALL_LIMIT, skew=60.0, local=True,
                          take_unsigned=True)
        sent: dict[str, bytes] = {}
        stream = bytearray()
        for _ in range(REQUESTS):
            payload = os.urandom(PAYLOAD)
            msg_id, frames = session.request("run", {"pts": "echo", "input": payload})
            sent[msg_id] = payload
            stream += pack_bytes(frames)
        peer = RawPeer(door_path(settings.endpoint))
        try:
            sending = asyncio.create_task(peer.send(bytes(stream)))
            others, slowest = 0, 0.0
            while not sending.done() or others == 0:   # served while the backlog grows
                started = time.monotonic()
                assert (await other.call("run", {"pts": "echo", "input": others}))[
                    "result"] == others
                slowest = max(slowest, time.monotonic() - started)
                others += 1
            await sending

            async def all_ran() -> bool:
                """Every request of both peers has run."""
                stats = await other.call("stats", {})
                return bool(stats["pts"]["echo"]["total"]["ok"] >= REQUESTS + others)

            await until(all_ran, timeout=60, every=0.05)
            started = time.monotonic()    # and once the backlog is at its cap
            assert (await other.call("ping", {}))["protocol"] == 1
            slowest = max(slowest, time.monotonic() - started)
            assert slowest < 2.0

            peer.sock.shutdown(socket.SHUT_WR)   # the daemon flushes what it kept, then closes
            reader = FrameReader(SMALL_LIMIT + SLACK)
            got = await peer.until_eof(reader)
        finally:
            peer.close()
        assert reader.pending() == 0     # no partial record
        replies = [session.read(frames) for frames in got]
        for message in replies:          # each whole, each the echo of its own request
            assert message is not None and message.type == reply_type("run"), message
            assert message.body["result"] == sent[str(message.re)]
        assert len({m.re for m in replies if m}) == len(replies)
        assert PAYLOAD * len(replies) > UNREAD_FACTOR * SMALL_LIMIT   # the cap, not less
        assert len(replies) < REQUESTS                                 # the rest dropped
        assert (await other.call("run", {"pts": "echo", "input": "after"}))["result"] == "after"


# 8. shutdown

async def test_shutdown_answers_the_calls_in_flight_and_removes_the_socket_file(
        tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", config())
    door = door_path(settings.endpoint)
    async with running_daemon(settings) as node, \
            door_client(settings, node.key, timeout=30.0) as client:
        assert door.exists()
        call = asyncio.create_task(client.call("run", {"pts": "sleep", "input": {"seconds": 1}}))
        await until(lambda: sleeping(client), timeout=20, every=0.02)
        node.daemon.stopping.set()
        reply = await asyncio.wait_for(call, timeout=30)
        assert reply["result"] == {"slept": 1}
    assert not door.exists()


async def test_a_stale_socket_file_is_replaced_at_start(tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", config())
    door = door_path(settings.endpoint)
    door.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(door))     # a socket file nobody listens on (a daemon that died)
    stale.close()
    assert stat.S_ISSOCK(mode_of(door))
    async with running_daemon(settings) as node, \
            door_client(settings, node.key, timeout=30.0) as client:
        assert (await client.call("ping", {}))["protocol"] == 1
    assert not door.exists()


# 9. pnsweb

async def test_pnsweb_reaches_a_local_daemon_by_its_door(node: Running) -> None:
    web = WebSettings(endpoint=node.settings.endpoint, key=node.key)
    async with pnsweb_client(web, timeout=30.0) as daemon:
        assert isinstance(daemon, StreamClient)
        assert daemon.endpoint == stream_door(node.settings.endpoint)
        assert (await daemon.call("ping", {}))["protocol"] == 1
        assert (await daemon.call("run", {"pts": "echo", "input": "web"}))["result"] == "web"
