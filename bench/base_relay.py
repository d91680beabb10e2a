"""Baseline 2: a bare 2-hop relay — client -> asyncio ROUTER relay -> DEALER echo workers.

``python -m bench.base_relay FRONT BACK WORKERS READY_FILE [POLICY]`` starts the relay and
``WORKERS`` echo worker processes (``python -m bench.base_relay worker BACK``), children of the
relay in its process group, and writes READY_FILE once every worker said hello. The relay
forwards frames untouched, draining both sockets in batches; a worker is a blocking loop that
decodes and re-encodes each request (msgpack). The floor PNS's worker mode is compared with.

POLICY ``round-robin`` (the default) hands each request to the next worker at once, so a
worker's socket queues requests and it never waits for the relay. ``one-each`` is PNS's rule:
a worker has one request at a time, the others wait in the relay's line for a free worker.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections import deque
from typing import Any

import msgpack
import zmq

from bench.bare_wire import dealer
from bench.base_echo import Drainer, router, until_signalled

HELLO = b"hello"


async def relay(front_endpoint: str, back_endpoint: str, workers: int, ready_file: str,
                policy: str = "round-robin") -> None:
    context: zmq.Context[Any] = zmq.Context()
    front = router(context, front_endpoint)
    back = router(context, back_endpoint)
    ready: list[bytes] = []
    turn = itertools.count()
    one_each = policy == "one-each"
    free: deque[bytes] = deque()          # one-each: idle workers, and requests waiting
    line: deque[list[Any]] = deque()

    def from_client(frames: list[Any]) -> None:
        if not ready:
            return   # no worker yet: dropped (the bench waits for the workers first)
        if not one_each:
            back_drainer.send([ready[next(turn) % len(ready)], *frames])
        elif free:
            back_drainer.send([free.popleft(), *frames])
        else:
            line.append(frames)

    def from_worker(frames: list[Any]) -> None:
        worker = frames[0].bytes
        if len(frames) == 2 and frames[1].bytes == HELLO:
            ready.append(worker)
            free.append(worker)
            if len(ready) == workers:
                with open(ready_file, "w") as marker:
                    marker.write("ready\n")
            return
        front_drainer.send(frames[1:])
        if one_each:
            if line:
                back_drainer.send([worker, *line.popleft()])
            else:
                free.append(worker)

    front_drainer = Drainer(front, from_client)
    back_drainer = Drainer(back, from_worker)
    argv = [sys.executable, "-m", "bench.base_relay", "worker", back_endpoint]
    # started once, before any load: a blocking Popen is harmless here
    children = [subprocess.Popen(argv) for _ in range(workers)]  # noqa: ASYNC220
    try:
        await until_signalled()
    finally:
        for child in children:
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
        front.close(linger=0)
        back.close(linger=0)
        context.term()


def worker(back_endpoint: str) -> None:
    context: zmq.Context[Any] = zmq.Context()
    sock = dealer(context, back_endpoint)
    sock.send(HELLO)
    try:
        while True:
            frames = sock.recv_multipart(copy=False)
            msg_id, body = msgpack.unpackb(frames[1].bytes, raw=False)
            reply = msgpack.packb([msg_id, body], use_bin_type=True)
            sock.send_multipart([frames[0], reply, *frames[2:]], copy=False)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close(linger=0)
        context.term()


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        import signal

        signal.signal(signal.SIGTERM, signal.default_int_handler)
        worker(sys.argv[2])
    else:
        asyncio.run(relay(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], *sys.argv[5:6]))
