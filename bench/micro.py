"""Micro-measurements behind small choices in the code: ``python -m bench.micro``.

Each line times the choice the code made against the obvious alternative, in this process, on
this machine, and prints both per call with the ratio. The figures go, dated, into
``bench/FINDINGS.md`` ("Micro-measurements"), which the code's comments point to instead of
carrying figures that age. Only ratios from one run mean anything on a shared machine.
"""

from __future__ import annotations

import collections.abc
import copy
import hashlib
import hmac
import itertools
import os
import pwd
import secrets
import sqlite3
import time
import timeit
from collections.abc import Callable

import structlog

from protocols.signing import Signer

Timed = Callable[[], object]


class Record:
    """Shaped like pnsd's job record (fourteen plain attributes) and copied the way it is."""

    def __init__(self) -> None:
        for index in range(14):
            setattr(self, f"field{index}", index)

    def copy(self) -> Record:
        twin = object.__new__(Record)
        twin.__dict__.update(self.__dict__)
        return twin


def per_call(fn: Timed, *, repeat: int = 5) -> float:
    """Seconds per call: the best of ``repeat`` rounds of about 0.2 s each."""
    timer = timeit.Timer(fn)
    count, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=count)) / count


def compare(what: str, chosen: Timed, other: Timed) -> str:
    ours, theirs = per_call(chosen), per_call(other)
    return (f"| {what} | {ours * 1e6:.3f} µs | {theirs * 1e6:.3f} µs | "
            f"{theirs / ours:.1f}x |")


def _sqlite(named: bool) -> Timed:
    conn = sqlite3.connect(":memory:")
    columns = [f"c{i}" for i in range(12)]
    conn.execute(f"CREATE TABLE t ({', '.join(columns)})")
    rows = [{c: i for c in columns} for i in range(100)]
    marks = ", ".join(f":{c}" for c in columns) if named else ", ".join("?" * len(columns))
    sql = f"INSERT INTO t VALUES ({marks})"
    getter = __import__("operator").itemgetter(*columns)
    if named:
        return lambda: conn.executemany(sql, rows)
    return lambda: conn.executemany(sql, map(getter, rows))


def lines() -> list[str]:
    body: object = {"result": 1}
    job = Record()
    key, header = secrets.token_bytes(32), b"Basic " + b"x" * 40
    signer, frames = Signer(secrets.token_bytes(32)), [b"a" * 40, b"b" * 200]
    counter, prefix = itertools.count(), secrets.token_hex(8)
    pool: list[str] = []

    def pooled_id() -> str:
        if not pool:
            raw = os.urandom(16 * 256).hex()
            pool.extend(raw[i:i + 32] for i in range(0, len(raw), 32))
        return pool.pop()

    def bound() -> None:
        with structlog.contextvars.bound_contextvars(trace="t"):
            pass

    def bind_reset() -> None:
        tokens = structlog.contextvars.bind_contextvars(trace="t")
        structlog.contextvars.reset_contextvars(**tokens)

    def hmac_copy() -> bytes:
        mac = reference.copy()
        for frame in frames:
            mac.update(frame)
        return mac.digest()

    reference = hmac.new(signer.key, digestmod=hashlib.sha256)
    return [
        "| choice (chosen vs alternative) | chosen | alternative | alternative / chosen |",
        "|---|---|---|---|",
        compare("reply check: isinstance(dict) vs isinstance(Mapping)",
                lambda: isinstance(body, dict),
                lambda: isinstance(body, collections.abc.Mapping)),
        compare("trace binding: bind + reset vs bound_contextvars", bind_reset, bound),
        compare("job record: __dict__ copy vs copy.copy", job.copy, lambda: copy.copy(job)),
        compare("job id: pooled urandom vs os.urandom(16) per id", pooled_id,
                lambda: os.urandom(16).hex()),
        compare("request id: prefix + counter vs secrets.token_hex(16)",
                lambda: f"{prefix}{next(counter):016x}", lambda: secrets.token_hex(16)),
        compare("credential cache key: keyed BLAKE2b vs HMAC-SHA256",
                lambda: hashlib.blake2b(header, key=key, digest_size=32).digest(),
                lambda: hmac.new(key, header, hashlib.sha256).digest()),
        compare("frame signature: pre-keyed SHA-256 copies vs hmac.HMAC.copy",
                lambda: signer.sign(frames), hmac_copy),
        compare("insert 100 rows: positional vs named parameters", _sqlite(False),
                _sqlite(True)),
        compare("user name: cached vs pwd.getpwuid per run", lambda: None,
                lambda: pwd.getpwuid(os.getuid())),
    ]


def main() -> None:
    print(f"bench.micro, {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} CPUs")
    print("\n".join(lines()))


if __name__ == "__main__":
    main()
