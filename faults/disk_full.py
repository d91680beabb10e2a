"""Fault 5: the job store's disk is full.

The daemon's ``db_path`` and ``files_dir`` live on a 2 MiB tmpfs mounted for the fault (root
only; pnsd has no config key for the store's ``max_db_bytes`` cap, so without root the fault is
skipped and says so). Jobs stored before are read back from disk (the daemon is restarted first
so nothing comes from memory); then a filler file takes the space and clients keep submitting.
New submissions must be refused with ``storage`` or accepted and kept - never acknowledged
then lost; stored results must stay readable and the daemon must keep answering. After the
filler is removed, submissions must work again, and after a graceful restart every
acknowledged job must still be there, with its result if it succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import msgpack

from faults.procs import Node
from faults.report import Row
from faults.runner import Context
from protocols.client import AsyncClient
from protocols.errors import ErrorCode, PnsError, RemoteError

SIZE = "4m"
FREE_WHEN_FULL = 200 * 1024     # bytes left free by the filler: some writes fit, then none
BIG = 70_000                     # input bytes above the store's inline limit: a blob file


def _mount(path: Path) -> str:
    """'' when a tmpfs is mounted at ``path``, else why not."""
    if os.geteuid() != 0:
        return "not root"
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs",
                             str(path)], capture_output=True, text=True, check=False)
    return "" if result.returncode == 0 else (result.stderr.strip() or "mount failed")


def _unmount(path: Path) -> None:
    result = subprocess.run(["umount", str(path)], capture_output=True, check=False)
    if result.returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _fill(store: Path, leave: int) -> Path:
    """Write a filler file until the disk is full, then give back ``leave`` bytes."""
    filler = store / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(chunk)
            out.flush()
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


def _give_back(filler: Path, size: int) -> None:
    os.truncate(filler, max(0, filler.stat().st_size - size))


def disk_full(ctx: Context) -> Row:
    row = Row("disk-full", tries=1)
    store = ctx.dir / "store"
    store.mkdir()
    why = _mount(store)
    if why:
        row.skipped = (f"cannot mount a {SIZE} tmpfs ({why}); pnsd has no config key for the "
                       "store's max_db_bytes stand-in (product gap)")
        return row
    node = Node(ctx.dir, "home", pnsd=f'db_path = "{store}/jobs.db"\nfiles_dir = "{store}/jobs"')
    try:
        node.start_daemon()
        before = asyncio.run(_submit_and_wait(node, row, 10, "before"))
        _restart(node)                                    # so results come from disk
        filler = _fill(store, FREE_WHEN_FULL)
        acked = asyncio.run(_while_full(node, row, before, ctx.pick(120, 60), filler))
        filler.unlink()
        after = asyncio.run(_submit_and_wait(node, row, 10, "after"))
        _restart(node)
        asyncio.run(_verify(node, row, {**before, **acked, **after}))
        if node.daemon is None or not node.daemon.alive():
            row.fail("pnsd died")
    finally:
        node.stop()
        _unmount(store)
    return row


def _restart(node: Node) -> None:
    assert node.daemon is not None
    node.daemon.stop(grace=20.0)
    node.start_daemon()


def _value(tag: str, n: int) -> dict[str, Any]:
    data = os.urandom(BIG) if n % 2 else os.urandom(64)
    return {"tag": tag, "n": n, "data": data}


async def _submit_and_wait(node: Node, row: Row, count: int, tag: str) -> dict[str, Any]:
    jobs: dict[str, Any] = {}
    async with node.async_client(timeout=30.0) as client:
        for n in range(count):
            value = _value(tag, n)
            row.sent += 1
            try:
                jobs[(await client.call("submit", {"pts": "echo", "input": value}))["job"]["id"]] \
                    = value
            except PnsError as exc:
                row.fail(f"submit with free space ({tag}): {exc}")
        for job, value in jobs.items():
            status, result = await _final(client, job)
            row.sent += 1
            if status != "successful" or _packed(result) != _packed(value):
                row.fail(f"job {job} with free space ({tag}) ended {status}")
    return jobs


async def _final(client: AsyncClient, job: str, timeout: float = 15.0) -> tuple[str, Any]:
    """The job's final status and result (None unless successful)."""
    deadline = time.monotonic() + timeout
    while True:
        record = (await client.call("job.status", {"job": job}))["job"]
        if record["status"] not in ("accepted", "running") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)   # polling is how a client follows an async job
    if record["status"] != "successful":
        return f"{record['status']} ({record['reason']}: {record['message'][:80]})", None
    return "successful", (await client.call("job.result", {"job": job}))["result"]


def _packed(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


async def _while_full(node: Node, row: Row, before: dict[str, Any], count: int,
                      filler: Path) -> dict[str, Any]:
    acked: dict[str, Any] = {}
    refused = 0
    sync_ok = sync_refused = 0
    async with node.async_client(timeout=30.0) as client:
        await _read_back(client, row, before)
        for n in range(count):
            if n % 20 == 19:
                # room for one input blob but not for its result as well: the tight spot
                await asyncio.to_thread(_give_back, filler, BIG * 3 // 2)
            value = _value("full", n)
            row.sent += 2
            try:
                job = (await client.call("submit", {"pts": "echo", "input": value}))["job"]["id"]
                acked[job] = value
            except RemoteError as exc:
                if exc.code != ErrorCode.STORAGE:
                    row.fail(f"submit on a full disk answered {exc.code}: {exc.message}")
                refused += 1
            try:
                reply = await client.call("run", {"pts": "echo", "input": value})
                if _packed(reply["result"]) != _packed(value):
                    row.fail("a synchronous run on a full disk returned something else")
                sync_ok += 1
            except RemoteError as exc:
                if exc.code != ErrorCode.STORAGE:
                    row.fail(f"run on a full disk answered {exc.code}: {exc.message}")
                sync_refused += 1
        seen = {}
        for job, value in acked.items():                 # acknowledged: kept, or failed clean
            row.sent += 1
            status, result = await _final(client, job)
            seen[job] = status
            if status == "successful" and _packed(result) != _packed(value):
                row.lose(f"job {job} acknowledged on a full disk: result differs")
            elif status.startswith(("accepted", "running")):
                row.lose(f"job {job} acknowledged on a full disk is stuck {status}")
        row.sent += 2
        await client.call("ping", {})
        stats = (await client.call("status", {}))["store"]
    row.expected = refused + sync_refused
    failed_clean = sum(1 for s in seen.values() if s.startswith("failed"))
    row.note(f"on the full disk: {len(acked)} submissions acknowledged ({failed_clean} of them "
             f"then failed), {refused} refused with storage; sync runs {sync_ok} answered, "
             f"{sync_refused} refused; store stats {stats}")
    if not refused:
        row.fail("the disk never filled up: no submission was refused", count=0)
        row.broken = "the disk never filled up"
    _remember(row, seen)
    return acked


async def _read_back(client: AsyncClient, row: Row, before: dict[str, Any]) -> None:
    """Results stored before the disk filled stay readable."""
    for job, value in before.items():
        row.sent += 1
        status, result = await _final(client, job)
        if status != "successful" or _packed(result) != _packed(value):
            row.lose(f"job {job} stored before the disk filled now reads {status}")


def _remember(row: Row, seen: dict[str, str]) -> None:
    row.__dict__.setdefault("_seen", {}).update(seen)


async def _verify(node: Node, row: Row, jobs: dict[str, Any]) -> None:
    """After a graceful restart: every acknowledged job is there, as it was seen before."""
    seen: dict[str, str] = row.__dict__.get("_seen", {})
    changed = 0
    async with node.async_client(timeout=30.0) as client:
        for job, value in jobs.items():
            row.sent += 1
            try:
                status, result = await _final(client, job, timeout=2.0)
            except RemoteError as exc:
                row.lose(f"job {job} acknowledged, after the restart {exc.code}: {exc.message}")
                continue
            was = seen.get(job, "successful")
            if status == "successful":
                if _packed(result) != _packed(value):
                    row.lose(f"job {job}: result after the restart differs")
            elif was == "successful":
                changed += 1
                row.lose(f"job {job} was successful with its result, after the restart {status}")
            elif not status.startswith("failed"):
                row.lose(f"job {job} after the restart: {status}")
    if changed:
        row.note(f"{changed} job(s) answered successful (from memory) on the full disk were not "
                 "recorded: after a restart they are failed")
