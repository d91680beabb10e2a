"""The Node.js worker runtime's blob frames on each link, with the daemon's side by hand.

On ``ipc://`` and stdio (links private to the service user) it takes blob frames left out of
the signature, holds them to the lengths in the signed header, and sends its own the same
way; on ``tcp://`` it signs every byte and refuses unsigned blob frames (SPEC.md, "Blob frames
on ipc://").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq
import zmq.asyncio

from protocols import stdioframe
from protocols.codec import Codec
from protocols.errors import ProtocolError

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).resolve().parents[2] / "workers" / "node"
NODE = shutil.which("node")
KEY = b"node-blob-test-key"
DATA = bytes(range(256)) * 400          # 102400 bytes: travels as a blob frame


class Link:
    """One Node worker and the frames to and from it, over a ROUTER of this test's or its
    pipes."""

    def __init__(self, worker: asyncio.subprocess.Process, router: Any = None) -> None:
        self.worker, self.router = worker, router
        self.reader = stdioframe.FrameReader(2**27)
        self.waiting: list[list[bytes]] = []

    async def send(self, frames: list[Any]) -> None:
        if self.router is not None:
            await self.router.send_multipart([b"n1", *frames])
            return
        assert self.worker.stdin is not None
        self.worker.stdin.write(stdioframe.pack_bytes([bytes(f) for f in frames]))
        await self.worker.stdin.drain()

    async def frames(self) -> list[bytes]:
        if self.router is not None:
            identity, *frames = await asyncio.wait_for(self.router.recv_multipart(), 20)
            assert identity == b"n1"
            return list(frames)
        assert self.worker.stdout is not None
        while not self.waiting:
            chunk = await asyncio.wait_for(self.worker.stdout.read(2**16), 20)
            assert chunk, "the worker closed its stdout"
            self.waiting.extend(self.reader.feed(chunk))
        return self.waiting.pop(0)

    async def next(self, peek: Codec, *skip: str) -> list[bytes]:
        """The frames of the next message whose type is not in ``skip``."""
        while True:
            frames = await self.frames()
            if peek.decode(frames).type not in skip:
                return frames


@contextlib.asynccontextmanager
async def node_link(tmp_path: Path, kind: str) -> AsyncIterator[Link]:
    if NODE is None or not (NODE_DIR / "node_modules" / "zeromq").is_dir():
        pytest.skip("node or workers/node's node_modules (make node-worker) is missing")
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    context = zmq.asyncio.Context()
    router = None
    connect = "stdio"
    if kind != "stdio":
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        if kind == "ipc":
            connect = f"ipc://{tmp_path}/w.sock"
            router.bind(connect)
        else:
            port = router.bind_to_random_port("tcp://127.0.0.1")
            connect = f"tcp://127.0.0.1:{port}"
    pipe = asyncio.subprocess.PIPE if kind == "stdio" else None
    worker = await asyncio.create_subprocess_exec(
        NODE, str(NODE_DIR / "bin/pns-worker.js"), "--connect", connect, "--entry",
        "ptsdemo:echo", "--key-file", str(key_file), "--id", "n1", "--heartbeat", "0.2",
        env={**os.environ, "PYTHONPATH": str(NODE_DIR / "examples")},
        stdin=pipe, stdout=pipe, stderr=asyncio.subprocess.PIPE)
    try:
        yield Link(worker, router)
    finally:
        if worker.returncode is None:
            worker.kill()
        await worker.wait()
        if router is not None:
            router.close()
        context.term()


def task(codec: Codec) -> list[Any]:
    return codec.encode("task.req", {"op": "run", "data": DATA, "timeout": 10, "job": None})


async def stop(link: Link, codec: Codec) -> str:
    """Stop the worker; its stderr."""
    await link.send(codec.encode("worker.stop", {}))
    assert await asyncio.wait_for(link.worker.wait(), 20) == 0
    assert link.worker.stderr is not None
    return (await link.worker.stderr.read()).decode()


@pytest.mark.parametrize("kind", ["ipc", "stdio"])
async def test_on_private_links_blob_frames_go_unsigned_and_are_held_to_their_lengths(
        tmp_path: Path, kind: str) -> None:
    local, strict = Codec(KEY, local=True), Codec(KEY)
    peek = Codec(KEY, local=True, guard_replay=False)
    cut, padded, dropped, extra = task(local), task(local), task(local), task(local)
    cut[4] = cut[4][:-1]
    padded[4] = padded[4] + b"\0"
    dropped = dropped[:4]
    extra.append(b"\0" * 10)
    async with node_link(tmp_path, kind) as link:
        await link.next(peek)                                   # the hello
        for frames in (cut, padded, dropped, extra):
            await link.send(frames)
        good = task(local)
        assert msgpack.unpackb(good[2])[6] == [len(DATA)]
        await link.send(good)
        answer = await link.next(peek, "worker.heartbeat")
        assert msgpack.unpackb(answer[2])[5:] == [None, [len(DATA)]]
        with pytest.raises(ProtocolError) as caught:
            strict.decode(answer)                               # its signature leaves the blob out
        assert caught.value.code == "auth"
        reply = local.decode(answer)
        assert (reply.type, reply.re, reply.body["result"]) == ("task.rep", local.decode(good).id,
                                                                DATA)
        log = await stop(link, local)
    assert log.count("dropped a message: malformed") == 4, log


async def test_on_tcp_every_byte_is_signed_and_unsigned_blob_frames_are_refused(
        tmp_path: Path) -> None:
    local, strict = Codec(KEY, local=True), Codec(KEY)
    peek = Codec(KEY, guard_replay=False)
    async with node_link(tmp_path, "tcp") as link:
        await link.next(peek)                                   # the hello
        await link.send(task(local))
        good = task(strict)
        await link.send(good)
        answer = await link.next(peek, "worker.heartbeat")
        assert len(msgpack.unpackb(answer[2])) == 5             # no blob lengths: all signed
        reply = strict.decode(answer)
        assert (reply.type, reply.re, reply.body["result"]) == ("task.rep", strict.decode(good).id,
                                                                DATA)
        log = await stop(link, strict)
    assert "dropped a message: auth: unsigned blob frames are taken on ipc:// only" in log, log
