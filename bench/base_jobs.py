"""Baseline 5: a bare durable job queue — asyncio ROUTER + SQLite (WAL) with group commit.

``python -m bench.base_jobs ENDPOINT DB``. Body ``["submit", input]``: the job row is inserted
and committed (WAL, ``synchronous=NORMAL``, as PNS's store) before the id is answered; the
echo "runs" at once and its result is written in the next batch. ``["result", id]`` answers
the stored result, or None while not written yet. Every batch of requests that arrived together
is one transaction in one worker thread. The floor of PNS's ``submit`` + ``job.result``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import zmq

from bench.base_echo import Drainer, router, until_signalled

SCHEMA = """CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT, created REAL,
finished REAL, input BLOB, result BLOB)"""

Request = tuple[Any, int, Any]   # identity frame, message id, argument


class Store:
    """The database, used only from its one worker thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None

    def batch(self, finishes: list[tuple[str, bytes]], submits: list[bytes],
              reads: list[str]) -> tuple[list[str], list[Any]]:
        if self.conn is None:
            self.conn = sqlite3.connect(self.path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute(SCHEMA)
        conn, now = self.conn, time.time()
        ids = [uuid.uuid4().hex for _ in submits]
        conn.execute("BEGIN")
        conn.executemany("UPDATE jobs SET status='successful', finished=?, result=? WHERE id=?",
                         [(now, blob, job) for job, blob in finishes])
        conn.executemany("INSERT INTO jobs VALUES (?, 'accepted', ?, NULL, ?, NULL)",
                         [(job, now, blob) for job, blob in zip(ids, submits, strict=True)])
        conn.execute("COMMIT")
        results = []
        for job in reads:
            row = conn.execute("SELECT result FROM jobs WHERE id=?", (job,)).fetchone()
            results.append(None if row is None or row[0] is None else row[0])
        return ids, results


async def serve(endpoint: str, db: str) -> None:
    context: zmq.Context[Any] = zmq.Context()
    sock = router(context, endpoint)
    submits: list[Request] = []
    reads: list[Request] = []
    wake = asyncio.Event()

    def handle(frames: list[Any]) -> None:
        msg_id, (op, arg) = msgpack.unpackb(frames[1].bytes, raw=False)
        (submits if op == "submit" else reads).append((frames[0], msg_id, arg))
        wake.set()

    drainer = Drainer(sock, handle)

    def answer(ident: Any, msg_id: int, body: Any) -> None:
        drainer.send([ident, msgpack.packb([msg_id, body], use_bin_type=True)])

    store = Store(db)
    finishes: list[tuple[str, bytes]] = []
    loop = asyncio.get_running_loop()

    async def flush() -> None:
        nonlocal finishes
        with ThreadPoolExecutor(1) as pool:
            while True:
                await wake.wait()
                wake.clear()
                batch_s, batch_r = submits[:], reads[:]
                submits.clear()
                reads.clear()
                done, finishes = finishes, []
                blobs = [msgpack.packb(arg, use_bin_type=True) for _i, _m, arg in batch_s]
                ids, results = await loop.run_in_executor(
                    pool, store.batch, done, blobs, [arg for _i, _m, arg in batch_r])
                for (ident, msg_id, _arg), job, blob in zip(batch_s, ids, blobs, strict=True):
                    answer(ident, msg_id, job)
                    finishes.append((job, blob))     # the echo "ran": result = input
                for (ident, msg_id, _arg), blob in zip(batch_r, results, strict=True):
                    answer(ident, msg_id, None if blob is None
                           else msgpack.unpackb(blob, raw=False))
                if finishes:
                    wake.set()

    flusher = asyncio.create_task(flush())
    try:
        await until_signalled()
    finally:
        flusher.cancel()
        sock.close(linger=0)
        context.term()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2]))
