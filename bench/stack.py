"""The processes under test and the load agent: started on demand, all stopped at the end.

Owns where everything lives (one short temporary directory, so ipc:// paths stay far below
the 107-byte limit), starting services in the order they depend on each other, the load
:class:`Agent` and the CPU :class:`Sampler`; how each service is started and known to be
ready is :mod:`bench.services`'s. :class:`Stack` is a context manager: leaving it stops every
process it started, on every path out (SIGTERM, grace, SIGKILL on each process group;
pnsd's workers, which live in groups of their own, by pid).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.services import DEPENDS, READY, STARTERS, Service
from harness.postgres import PgServer
from harness.procs import (
    PYTHON,
    ROOT,
    Child,
    CpuTrees,
    child_env,
    children,
    rss_bytes,
)


def rss_mb(pid: int) -> float | None:
    """Resident set size in MB (10^6 bytes), or None if the process is gone."""
    value = rss_bytes(pid)
    return None if value is None else value / 1e6


# services that serve from child processes: their RSS is that of the parent and its children
# (pnsweb: one per core; shared pages are counted once per process, as RSS always does)
TREE_RSS = frozenset({"pnsweb"})


def service_rss_mb(name: str, pid: int) -> float | None:
    if name not in TREE_RSS:
        return rss_mb(pid)
    own = rss_mb(pid)
    if own is None:
        return None
    return own + sum(v for v in (rss_mb(child) for child in children(pid)) if v is not None)


class Agent:
    """The load process: one JSON command in, one JSON answer out, within a deadline."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def _start(self) -> subprocess.Popen[bytes]:
        with (self.tmp / "agent.log").open("ab") as log:
            return subprocess.Popen([PYTHON, "-m", "bench.agent"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=log, env=child_env(),
                                    cwd=ROOT, start_new_session=True)

    def call(self, command: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        """Run one load; an agent that died before answering is restarted and asked again."""
        for attempt in (1, 2):
            if self.process is None or self.process.poll() is not None:
                self.process = self._start()
            assert self.process.stdin is not None and self.process.stdout is not None
            try:
                self.process.stdin.write((json.dumps(command) + "\n").encode())
                self.process.stdin.flush()
                line = self._read_line(self.process.stdout.fileno(), timeout)
            except BrokenPipeError:
                line = b""
            if line:
                break
            died = line == b""
            code = self.process.poll()
            self.stop()
            self.restarts += 1
            if not died:
                raise TimeoutError(f"load {command['kind']} overran {timeout:.0f} s; "
                                   "agent restarted")
            if attempt == 2:
                raise RuntimeError(f"the load agent died during {command['kind']} "
                                   f"(exit status {code}); see agent.log")
        answer: dict[str, Any] = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(f"load {command['kind']} failed: {answer['error']}")
        result: dict[str, Any] = answer["result"]
        return result

    @staticmethod
    def _read_line(fd: int, timeout: float) -> bytes | None:
        """One answer line; None on timeout, b"" when the agent closed its end (died)."""
        deadline = time.monotonic() + timeout
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return b""
            data += chunk
        return data

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, 9)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=5)
            self.process = None


class Sampler:
    """While a ``with`` block runs: VmRSS of some processes (when it begins, then every 50 ms:
    that first level and the peak), and the CPU time their process trees used (each process
    with its descendants: pnsd's workers, the relay's workers)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak: dict[str, float] = {}
        self.first: dict[str, float] = {}   # VmRSS when the block began: the level at rest
        self.cpu: dict[str, float] = {}     # seconds of CPU used during the block
        self.series: list[tuple[float, float]] = []   # (wall time, CPU of all trees)
        self._trees = CpuTrees(pids.values())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            value = service_rss_mb(name, pid)
            if value is not None:
                self.first.setdefault(name, value)
                self.peak[name] = max(self.peak.get(name, 0.0), value)
        self.series.append((time.time(), self._trees.seconds()))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def cpu_between(self, start: float, end: float) -> float | None:
        """CPU seconds of all trees between two wall-clock times (linear interpolation)."""
        if len(self.series) < 2 or end <= start:
            return None
        return _at(self.series, end) - _at(self.series, start)

    def __enter__(self) -> Sampler:
        self.cpu = {name: -self._trees.seconds(pid) for name, pid in self.pids.items()}
        self._sample()      # before the load: the level it rises from
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()
        for name, pid in self.pids.items():
            self.cpu[name] += self._trees.seconds(pid)


def _at(series: list[tuple[float, float]], t: float) -> float:
    for (t0, c0), (t1, c1) in itertools.pairwise(series):
        if t0 <= t <= t1:
            return c0 + (c1 - c0) * ((t - t0) / (t1 - t0) if t1 > t0 else 0.0)
    return series[0][1] if t < series[0][0] else series[-1][1]


class Stack:
    """Starts services by name (see :data:`STARTERS`), each once; stops them all on exit."""

    def __init__(self, *, keep: bool = False) -> None:
        self.keep = keep      # leave the temporary directory (logs, databases) for a post-mortem
        self.tmp = Path(tempfile.mkdtemp(prefix="pb", dir="/tmp"))
        self.services: dict[str, Service] = {}
        self.agent = Agent(self.tmp)
        self.pg: PgServer | None = None   # the shared job store's server, for *_pg services

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.agent.stop()
        # pnsweb before pnsd, the web baseline before the echo it calls
        for service in reversed(list(self.services.values())):
            service.child.stop()
        self.services.clear()
        if self.pg is not None:
            self.pg.__exit__(None, None, None)
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self, names: list[str]) -> None:
        """Start the named services (and what they depend on), concurrently where possible."""
        order = []
        for name in names:
            for dep in (*DEPENDS.get(name, ()), name):
                if dep not in order and dep not in self.services:
                    order.append(dep)
        first = [n for n in order if not DEPENDS.get(n)]
        later = [n for n in order if DEPENDS.get(n)]
        for group in (first, later):
            launched = [(name, STARTERS[name](self, name)) for name in group]
            for name, service in launched:
                self.services[name] = service
            for name, service in launched:
                READY[name](self, service)
        time.sleep(0.5)   # let start-up work settle before the idle RSS is read
        for name in order:
            service = self.services[name]
            service.rss_start = service_rss_mb(name, service.pid)

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def child(self, name: str, argv: list[str], **kwargs: Any) -> Child:
        return Child(name, argv, log=self.tmp / f"{name}.log", **kwargs)

    # -- pnsd ---------------------------------------------------------------------------------

    def pnsd_status(self, name: str) -> dict[str, Any]:
        from protocols.client import Client  # noqa: PLC0415 - the orchestrator's only call

        service = self.services[name]
        with Client(service.endpoint, key=bytes.fromhex(service.key), timeout=10.0) as client:
            status: dict[str, Any] = client.call("status", {})
        return status

    @contextlib.contextmanager
    def sampling(self, *names: str) -> Iterator[Sampler]:
        with Sampler({n: self.services[n].pid for n in names if n in self.services}) as s:
            yield s
