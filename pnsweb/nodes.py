"""pnsweb in front of several pnsd nodes that share one job store (``[pnsweb] daemons``).

Owns :class:`NodePool`, a :class:`pnsweb.keys.DaemonClient` over one client per node, and the
choice of node for each call:

- a run or a submission (``run``, ``submit``) goes to the least busy node that is up and
  serves its PTS: busy is the calls this pnsweb has in flight there plus the runs and queued
  jobs the node reported at its last health check;
- what acts on a live job (``job.cancel``, ``job.delete``, ``job.watch``) goes to the node that
  runs it (the job's ``node``, asked of any node); if that node is down, to any node, whose
  answer comes from the shared store;
- everything else (job status, results, lists, the PTS catalogue) reads the shared store
  through any node that is up, and a read whose node went away is tried once more elsewhere;
- any call a node answers "stopping, not run" (:func:`not_run`: it is being stopped) is sent
  once more, to the node the same choice makes among the others: so a node can be restarted
  without a failed request.

Each node is asked for its status every ``every`` seconds (a ``status`` call with a short
timeout): a node that does not answer is down until it answers again. Must not import pnsd.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from pnsweb.keys import DaemonClient
from pnsweb.settings import WebSettings
from protocols.client import AsyncClient
from protocols.errors import ClientTimeout, ErrorCode, RemoteError
from protocols.streamclient import StreamClient, stream_door

log = structlog.get_logger(__name__)

CHECK_EVERY = 1.0     # seconds between health checks of each node
CHECK_TIMEOUT = 2.0   # seconds a node has to answer one
PLACED = frozenset({"run", "submit"})
OF_LIVE_JOB = frozenset({"job.cancel", "job.delete", "job.watch"})
RETRIED = frozenset({"job.status", "job.result", "job.result_chunk", "job.list", "job.input",
                     "pts.list", "pts.describe", "pts.history", "status", "stats", "ping"})


@dataclass
class Node:
    endpoint: str
    client: DaemonClient
    up: bool = True        # until a health check says otherwise
    name: str = ""         # the node's name in the store (its status says)
    pts: frozenset[str] = frozenset()
    load: int = 0          # runs and queued jobs at the last health check
    in_flight: int = 0
    failures: int = field(default=0)

    @property
    def busy(self) -> int:
        return self.in_flight + self.load


class NoNode(RemoteError):
    def __init__(self, why: str) -> None:
        super().__init__(ErrorCode.UNAVAILABLE, why)


class NodePool:
    """One :class:`DaemonClient` over several nodes (see the module's docstring)."""

    def __init__(self, clients: Mapping[str, DaemonClient], *, every: float = CHECK_EVERY
                 ) -> None:
        if not clients:
            raise ValueError("a node pool needs at least one node")
        self.nodes = [Node(endpoint, client) for endpoint, client in clients.items()]
        self._every = every
        self._checking: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Check every node once, then keep checking in a task :meth:`close` ends."""
        await self.check()
        self._checking = asyncio.get_running_loop().create_task(self._keep_checking(),
                                                                name="node-checks")

    async def close(self) -> None:
        if self._checking is not None:
            self._checking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checking
        for node in self.nodes:
            await node.client.close()

    async def call(self, op: str, body: Any = None, *, timeout: float | None = None) -> Any:
        node = await self._choose(op, body)
        try:
            return await self._call(node, op, body, timeout)
        except (RemoteError, ClientTimeout) as exc:
            if not (not_run(exc) or (op in RETRIED and _lost(exc))):
                raise
            node.up = False
            log.warning("node_down", endpoint=node.endpoint, op=op, error=str(exc))
            return await self._call(await self._choose(op, body), op, body, timeout)

    async def stream(self, op: str, body: Any = None, *, timeout: float | None = None
                     ) -> AsyncIterator[Any]:
        node = await self._choose(op, body)
        node.in_flight += 1
        try:
            async for event in node.client.stream(op, body, timeout=timeout):
                yield event
        finally:
            node.in_flight -= 1

    async def check(self) -> None:
        await asyncio.gather(*(self._check(node) for node in self.nodes))

    def figures(self) -> list[dict[str, Any]]:
        return [{"endpoint": n.endpoint, "name": n.name, "up": n.up, "busy": n.busy,
                 "pts": sorted(n.pts)} for n in self.nodes]

    async def _keep_checking(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            await self.check()

    async def _check(self, node: Node) -> None:
        try:
            status = await node.client.call("status", {}, timeout=CHECK_TIMEOUT)
        except (RemoteError, ClientTimeout) as exc:
            node.failures += 1
            if node.up:
                log.warning("node_down", endpoint=node.endpoint, error=str(exc))
            node.up = False
            return
        if not node.up:
            log.info("node_up", endpoint=node.endpoint)
        pts = status.get("pts") or {}
        node.up = bool(status.get("accepting", True))
        node.name = str((status.get("store") or {}).get("node", ""))
        node.pts = frozenset(name for name, p in pts.items() if p.get("state") != "unavailable")
        node.load = sum(int(p.get("running") or 0) + int(p.get("queued") or 0)
                        for p in pts.values())

    async def _call(self, node: Node, op: str, body: Any, timeout: float | None) -> Any:
        node.in_flight += 1
        try:
            return await node.client.call(op, body, timeout=timeout)
        finally:
            node.in_flight -= 1

    async def _choose(self, op: str, body: Any) -> Node:
        up = self._up()
        if op in PLACED and isinstance(body, dict):
            serving = [node for node in up if body.get("pts") in node.pts]
            chosen = self._least_busy(serving or up)
            chosen.load += 1   # until its next health check says how busy it really is
            return chosen
        if op in OF_LIVE_JOB and isinstance(body, dict) and isinstance(body.get("job"), str):
            owner = await self._owner(body["job"], up)
            if owner is not None:
                return owner
        return self._least_busy(up)

    async def _owner(self, job: str, up: list[Node]) -> Node | None:
        try:
            record = await self._call(self._least_busy(up), "job.status", {"job": job}, None)
        except (RemoteError, ClientTimeout):
            return None     # the call itself answers with the reason
        name = (record.get("job") or {}).get("node")
        return next((node for node in up if name and node.name == name), None)

    def _up(self) -> list[Node]:
        up = [node for node in self.nodes if node.up]
        if not up:
            raise NoNode("no pnsd node is up: " + ", ".join(n.endpoint for n in self.nodes))
        return up

    @staticmethod
    def _least_busy(nodes: list[Node]) -> Node:
        return min(nodes, key=lambda node: node.busy)


def not_run(exc: Exception) -> bool:
    """The node is stopping and did not run the request (SPEC.md, "Stopping"): it may go
    anywhere else, whatever it does."""
    return (isinstance(exc, RemoteError) and exc.code == ErrorCode.UNAVAILABLE
            and exc.details.get("stopping") is True)


def _lost(exc: Exception) -> bool:
    """The node did not answer (gone, or its link dropped), as opposed to a refusal."""
    return isinstance(exc, ClientTimeout) or (
        isinstance(exc, RemoteError) and exc.code == ErrorCode.UNAVAILABLE
        and "connection to the daemon" in exc.message and "was lost" in exc.message)


async def daemon_client(settings: WebSettings) -> DaemonClient:
    """pnsweb's client of its daemon (a single process, or each child of several): one
    client, or with ``daemons`` a pool over one client per node."""
    def connect(endpoint: str) -> DaemonClient:
        if endpoint.startswith("ipc://"):   # a local daemon: by its stream door, a faster hop
            return StreamClient(stream_door(endpoint), key=settings.key,
                                timeout=settings.call_timeout,
                                max_bytes=settings.max_message_bytes)
        return AsyncClient(endpoint, key=settings.key, timeout=settings.call_timeout,
                           max_bytes=settings.max_message_bytes, curve=settings.curve)

    if not settings.daemons:
        return connect(settings.endpoint)
    pool = NodePool({endpoint: connect(endpoint) for endpoint in settings.daemons})
    await pool.start()
    log.info("pnsweb_nodes", nodes=pool.figures())
    return pool
