"""pnsweb's pool of pnsd nodes: placement of runs, reads through any node, calls that act on a
live job go to its node, and nodes that stop answering are routed around."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pnsd.server import STOPPING, _unavailable
from pnsweb.nodes import NodePool, not_run
from pnsweb.settings import SettingsError, load_settings
from protocols.errors import ClientTimeout, ErrorCode, RemoteError

LOST = RemoteError(ErrorCode.UNAVAILABLE, "the connection to the daemon at ipc://x was lost; "
                   "the request may or may not have run")


class FakeNode:
    """A daemon client that answers ``status`` with its PTS and load, and records calls."""

    def __init__(self, name: str, pts: dict[str, int], *, jobs: dict[str, str] | None = None
                 ) -> None:
        self.name = name
        self.pts = pts          # PTS name -> runs and queued jobs
        self.jobs = jobs or {}  # job id -> the node that runs it (the shared store's view)
        self.calls: list[str] = []
        self.dead = False
        self.stopping = False   # answers as a stopping pnsd does: not run

    async def call(self, op: str, body: Any = None, *, timeout: float | None = None) -> Any:
        if self.dead:
            raise ClientTimeout(f"no reply to {op}")
        self.calls.append(op)
        if self.stopping:       # the very body pnsd's server answers with
            raise RemoteError.from_body(_unavailable(STOPPING, stopping=True))
        if op == "status":
            return {"accepting": True, "store": {"node": self.name},
                    "pts": {name: {"state": "ready", "running": load, "queued": 0}
                            for name, load in self.pts.items()}}
        if op == "job.status":
            return {"job": {"id": body["job"], "node": self.jobs.get(body["job"], "")}}
        return {"by": self.name}

    async def stream(self, op: str, body: Any = None, *, timeout: float | None = None
                     ) -> AsyncIterator[Any]:
        self.calls.append(op)
        yield {"by": self.name}

    async def close(self) -> None:
        self.dead = True


@pytest.fixture
async def pool() -> AsyncIterator[tuple[NodePool, FakeNode, FakeNode]]:
    jobs = {"j1": "b"}
    a = FakeNode("a", {"echo": 3, "only-a": 0}, jobs=jobs)
    b = FakeNode("b", {"echo": 1}, jobs=jobs)
    nodes = NodePool({"ipc://a": a, "ipc://b": b}, every=3600.0)
    await nodes.start()
    yield nodes, a, b
    await nodes.close()


async def test_a_run_goes_to_the_least_busy_node_that_serves_its_pts(
        pool: tuple[NodePool, FakeNode, FakeNode]) -> None:
    nodes, _a, _b = pool
    assert (await nodes.call("submit", {"pts": "echo"}))["by"] == "b"    # load 1 < 3
    assert (await nodes.call("run", {"pts": "only-a"}))["by"] == "a"     # b does not serve it
    # placements count until the next health check: a burst spreads over the nodes
    placed = [(await nodes.call("submit", {"pts": "echo"}))["by"] for _ in range(4)]
    assert placed.count("a") >= 1 and placed.count("b") >= 2


async def test_calls_on_a_live_job_go_to_the_node_that_runs_it(
        pool: tuple[NodePool, FakeNode, FakeNode]) -> None:
    nodes, a, _b = pool
    a.pts["echo"] = 0       # a is the least busy now, but j1 runs on b
    await nodes.check()
    assert (await nodes.call("job.cancel", {"job": "j1"}))["by"] == "b"
    assert [event async for event in nodes.stream("job.watch", {"job": "j1"})] == [{"by": "b"}]


async def test_a_node_that_stops_answering_is_routed_around(
        pool: tuple[NodePool, FakeNode, FakeNode]) -> None:
    nodes, _a, b = pool
    b.dead = True
    # a read whose node does not answer is tried once more elsewhere
    assert (await nodes.call("job.result", {"job": "j1"}))["by"] == "a"
    assert (await nodes.call("submit", {"pts": "echo"}))["by"] == "a"
    assert [n["up"] for n in nodes.figures()] == [True, False]
    b.dead = False
    await nodes.check()     # the health check brings it back
    assert [n["up"] for n in nodes.figures()] == [True, True]


async def test_a_run_is_not_retried_on_another_node(
        pool: tuple[NodePool, FakeNode, FakeNode]) -> None:
    """The request may have run on the node that went away: running it again is not ours to
    decide."""
    nodes, a, b = pool

    async def lose(op: str, body: Any = None, *, timeout: float | None = None) -> Any:
        raise LOST

    b.call = lose  # type: ignore[method-assign]
    with pytest.raises(RemoteError, match="was lost"):
        await nodes.call("submit", {"pts": "echo"})
    assert "submit" not in a.calls


async def test_a_node_that_is_stopping_hands_every_call_to_another(
        pool: tuple[NodePool, FakeNode, FakeNode]) -> None:
    """A node answers "stopping" only for what it did not run: even a run may go elsewhere."""
    nodes, a, b = pool
    b.stopping = True
    assert (await nodes.call("submit", {"pts": "echo"}))["by"] == "a"   # b, least busy, stops
    assert b.calls[-1] == "submit" and a.calls[-1] == "submit"
    assert [n["up"] for n in nodes.figures()] == [True, False]
    assert (await nodes.call("job.cancel", {"job": "j1"}))["by"] == "a"    # j1's node stops
    a.stopping = True       # the last node stopping: the caller is told no node is up
    with pytest.raises(RemoteError, match="no pnsd node is up"):
        await nodes.call("run", {"pts": "echo"})


def test_only_a_stopping_answer_counts_as_not_run() -> None:
    assert not_run(RemoteError.from_body(_unavailable(STOPPING, stopping=True)))
    assert not not_run(LOST)
    assert not not_run(RemoteError(ErrorCode.UNAVAILABLE, "PTS echo is starting"))
    assert not not_run(ClientTimeout("no reply to run"))


async def test_no_node_up_is_unavailable(pool: tuple[NodePool, FakeNode, FakeNode]) -> None:
    nodes, a, b = pool
    a.dead = b.dead = True
    await nodes.check()
    with pytest.raises(RemoteError) as caught:
        await nodes.call("job.list", {})
    assert caught.value.code == ErrorCode.UNAVAILABLE
    assert "no pnsd node is up" in caught.value.message


def test_daemons_are_read_from_the_pnsweb_table(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.key").write_text("ab" * 32)
    (home / "secret.key").chmod(0o600)
    config = tmp_path / "pnsd.toml"
    config.write_text(f'[pnsd]\nhome = "{home}"\n'
                      '[pnsweb]\ndaemons = ["ipc:///srv/a.sock", "tcp://n2:7755"]\n')
    settings = load_settings(config=config, env={"HOME": str(tmp_path)})
    assert settings.daemons == ("ipc:///srv/a.sock", "tcp://n2:7755")
    config.write_text(f'[pnsd]\nhome = "{home}"\n[pnsweb]\ndaemons = ["http://n2"]\n')
    with pytest.raises(SettingsError, match="not an ipc:// or tcp:// endpoint"):
        load_settings(config=config, env={"HOME": str(tmp_path)})
