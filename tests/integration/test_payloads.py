"""Large payloads on the real daemon: blob frames that do not match their signed header, a
multipart message cut short, and a disk that fills while a large record is written — each a
clear error for that request or job alone, while everything else carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio

from protocols.client import AsyncClient
from protocols.codec import Codec, read_refusal
from protocols.errors import ErrorCode, ProtocolError, RemoteError
from tests.integration.conftest import Running, running_daemon, settings_for
from tests.waiting import until

pytestmark = pytest.mark.slow

BLOB = os.urandom(300 * 1024)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_daemon(settings_for(tmp_path / "home")) as running:
        yield running


async def send_raw(node: Running, frames: list[Any], endpoint: str = "") -> Any:
    """Send ``frames`` on a DEALER of our own (to the daemon's ipc endpoint unless given);
    the daemon's answer, decoded."""
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(endpoint or node.settings.endpoint)
    try:
        await socket.send_multipart(frames)
        answer = await asyncio.wait_for(socket.recv_multipart(), 10)
    finally:
        socket.close()
        context.term()
    try:
        return Codec(node.key, local=True).decode(answer)
    except ProtocolError:       # refused before it was authenticated: answered unsigned
        return read_refusal(answer)


def cut(frames: list[Any], how: str) -> list[Any]:
    if how == "blob cut short":
        return [*frames[:4], frames[4][:-1]]
    if how == "blob padded":
        return [*frames[:4], frames[4] + b"\0"]
    if how == "blob frame dropped":          # a multipart message truncated on the way
        return frames[:4]
    return [*frames, b"extra"]               # "a frame added"


@pytest.mark.parametrize("how", ["blob cut short", "blob padded", "blob frame dropped",
                                 "a frame added"])
async def test_a_blob_frame_that_does_not_match_its_signed_length_is_refused_alone(
    node: Running, how: str,
) -> None:
    frames = Codec(node.key, local=True).encode("run.req", {"pts": "echo", "input": BLOB},
                                                msg_id="f" * 32)
    answer = await send_raw(node, cut(frames, how))
    assert answer.type == "error" and answer.re == "f" * 32
    assert answer.body["code"] == ErrorCode.MALFORMED
    async with node.client(timeout=30.0) as client:     # the daemon serves on, and the
        assert (await client.call("run", {"pts": "echo", "input": BLOB}))["result"] == BLOB
        jobs = await client.call("job.list", {"pts": "echo"})
        assert jobs["total"] == 1          # the refused request recorded nothing


async def test_the_tcp_endpoint_refuses_unsigned_blob_frames_and_the_ipc_one_takes_them(
        tmp_path: Path) -> None:
    settings = settings_for(tmp_path / "home", 'tcp_endpoint = "tcp://127.0.0.1:0"\n'
                                               "tcp_insecure = true\n")
    async with running_daemon(settings) as node:
        assert node.daemon.tcp_server is not None
        tcp = node.daemon.tcp_server.bound[0]
        unsigned = Codec(node.key, local=True)
        answer = await send_raw(node, unsigned.encode(
            "run.req", {"pts": "echo", "input": BLOB}, msg_id="e" * 32), tcp)
        assert (answer.body["code"], answer.re) == (ErrorCode.AUTH, "e" * 32)
        answer = await send_raw(node, unsigned.encode(
            "run.req", {"pts": "echo", "input": BLOB}, msg_id="f" * 32))
        assert answer.body["result"] == BLOB
        async with AsyncClient(tcp, key=node.key, timeout=30.0) as client:  # signed: taken
            assert (await client.call("run", {"pts": "echo", "input": BLOB}))["result"] == BLOB


async def test_a_client_signing_its_blobs_takes_unsigned_ones_back_over_ipc(
    node: Running,
) -> None:
    async with node.client(timeout=30.0, local=False) as client:
        assert (await client.call("run", {"pts": "echo", "input": BLOB}))["result"] == BLOB


@contextlib.contextmanager
def small_disk(path: Path, mib: int) -> Iterator[None]:
    """A tmpfs of ``mib`` MiB at ``path`` (a disk that fills); skips where mounting is not
    allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs",
                              str(path)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_a_disk_that_fills_while_a_large_result_is_written_fails_that_job_alone(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    settings = settings_for(home)
    big = os.urandom(16 * 2**20)
    with small_disk(settings.files_dir, 24):
        filler = settings.files_dir / "filler"
        filler.write_bytes(bytes(12 * 2**20))      # 12 MiB left: a 16 MiB file cannot fit
        async with running_daemon(settings) as node, node.client(timeout=60.0) as client:
            reply = await client.call("run", {"pts": "echo", "input": big})
            assert reply["result"] == big          # the run itself succeeded (its reply)
            job = reply["job"]

            async def recorded_failed() -> bool:
                status = (await client.call("job.status", {"job": job}))["job"]
                return status["status"] == "failed"
            await until(recorded_failed, timeout=30)
            status = (await client.call("job.status", {"job": job}))["job"]
            assert status["reason"] == ErrorCode.STORAGE
            with pytest.raises(RemoteError) as caught:     # never a partial result
                await client.call("job.result", {"job": job})
            assert caught.value.code == ErrorCode.STORAGE
            assert not (settings.files_dir / job).exists()     # no part file left
            small = await client.call("run", {"pts": "echo", "input": [1, 2]})
            assert small["result"] == [1, 2]       # nothing else stalls
            filler.unlink()
            again = await client.call("run", {"pts": "echo", "input": big})
            stored = await client.result(again["job"])
            assert stored["result"] == big and stored["job"]["status"] == "successful"


@pytest.fixture
async def small_limit(tmp_path: Path) -> AsyncIterator[Running]:
    async with running_daemon(settings_for(tmp_path / "home",
                                           f"max_message_bytes = {LIMIT}\n")) as running:
        yield running


LIMIT = 2**20


async def test_an_input_over_the_message_limit_goes_in_parts_and_its_result_in_chunks(
    small_limit: Running,
) -> None:
    big = os.urandom(3 * LIMIT)
    async with AsyncClient(small_limit.settings.endpoint, key=small_limit.key,
                           max_bytes=LIMIT, timeout=30.0) as client:
        reply = await client.run("run", {"pts": "echo", "input": {"x": big}})
        assert reply["result"] == {"x": big}
        submitted = await client.run("submit", {"pts": "echo", "input": big})
        job = submitted["job"]["id"]

        async def done() -> bool:
            return (await client.call("job.status", {"job": job}))["job"]["status"] == "successful"
        await until(done, timeout=30)
        assert (await client.result(job))["result"] == big
    uploads = small_limit.settings.home / "uploads"
    assert list(uploads.iterdir()) == []       # every upload was taken and removed


async def test_an_upload_cut_short_or_out_of_order_is_refused_and_nothing_runs(
    small_limit: Running,
) -> None:
    form = msgpack.packb(os.urandom(3 * LIMIT))
    async with small_limit.client(timeout=30.0) as client:
        upload = (await client.call("upload", {"size": len(form)}))["upload"]
        parts = [form[i:i + LIMIT // 2] for i in range(0, len(form), LIMIT // 2)]
        await client.call("upload", {"upload": upload, "offset": 0, "data": parts[0]})
        with pytest.raises(RemoteError) as caught:     # a part skipped: refused, kept
            await client.call("upload", {"upload": upload, "offset": 2 * len(parts[0]),
                                         "data": parts[2]})
        assert caught.value.code == ErrorCode.CONFLICT
        await client.call("upload", {"upload": upload, "offset": len(parts[0]),
                                     "data": parts[1]})
        with pytest.raises(RemoteError) as caught:     # the stream stops here: truncated
            await client.call("run", {"pts": "echo", "input_upload": upload})
        assert caught.value.code == ErrorCode.BAD_REQUEST
        assert "incomplete" in caught.value.message
        with pytest.raises(RemoteError) as caught:     # and it is gone
            await client.call("upload", {"upload": upload, "offset": 2 * len(parts[0]),
                                         "data": parts[2]})
        assert caught.value.code == ErrorCode.NOT_FOUND
        assert (await client.call("job.list", {}))["total"] == 0     # nothing ran
        assert (await client.call("run", {"pts": "echo", "input": 1}))["result"] == 1
