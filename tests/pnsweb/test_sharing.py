"""The hub and its links in one process, over a real unix socket: what the pnsweb processes
of one port share (pnsweb.sharing, pnsweb.hub, pnsweb.replica)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from pnsweb.console.sessions import Sessions
from pnsweb.hub import Hub
from pnsweb.metrics import Metrics
from pnsweb.replica import Replica
from pnsweb.settings import User, WebSettings
from pnsweb.sharing import Link, settings_from_wire, settings_to_wire
from pnsweb.throttle import LoginThrottle
from tests.waiting import until

SETTINGS = WebSettings(endpoint="ipc:///x", key=b"k" * 32, port=8123, workers=2,
                       users=(User("ada", "scrypt$00$11", admin=True),))


@dataclass
class Member:
    """A child's end: its link, its replica and its request counters."""

    link: Link
    replica: Replica
    metrics: Metrics
    listening: asyncio.Task[None]


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[tuple[Hub, str]]:
    hub = Hub(SETTINGS, session_key=b"s" * 32)
    path = str(tmp_path / "hub.sock")
    server = await asyncio.start_unix_server(hub.serve, path=path)
    try:
        yield hub, path
    finally:
        server.close()
        await hub.close()


async def join(path: str, pid: int) -> Member:
    link = await Link.connect(path)
    listening = asyncio.create_task(link.listen())
    hello = await link.call("join", {"pid": pid})
    replica = Replica(LoginThrottle(), Sessions(key=bytes.fromhex(hello["session_key"])))
    replica.load(hello["shared"])
    metrics = Metrics()
    link.serve(apply=replica.apply, snapshot=metrics.snapshot)
    assert settings_from_wire(hello["settings"]) == SETTINGS
    return Member(link, replica, metrics, listening)


async def leave(member: Member) -> None:
    await member.link.close()
    member.listening.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await member.listening


def test_settings_travel_whole() -> None:
    assert settings_from_wire(settings_to_wire(SETTINGS)) == SETTINGS


async def test_an_event_is_applied_everywhere_before_tell_returns(hub: Any) -> None:
    _, path = hub
    one, two = await join(path, 1), await join(path, 2)
    for _ in range(6):
        one.replica.throttle.failed("10.0.0.1", "ada")
        await one.link.tell({"kind": "login_failed", "client": "10.0.0.1", "name": "ada"})
    assert two.replica.throttle.waiting("10.0.0.1")      # no wait: it is there already
    token = one.replica.sessions.open("ada")
    session = one.replica.sessions.find(token)
    assert session is not None
    await one.link.tell({"kind": "session_opened",
                         "mac": one.replica.sessions.mac_of(token).hex(),
                         "user": "ada", "expires": session.expires})
    assert two.replica.sessions.find(token) == session   # the shared key: the same MAC
    three = await join(path, 3)                           # a late child starts from the copy
    assert three.replica.sessions.find(token) == session
    assert three.replica.throttle.waiting("10.0.0.1")
    for member in (one, two, three):
        await leave(member)


async def test_metrics_are_the_sum_of_every_child_and_of_those_gone(hub: Any) -> None:
    the_hub, path = hub
    one, two = await join(path, 1), await join(path, 2)
    one.metrics.observe("GET", "/healthz", 200, 0.001)
    two.metrics.observe("GET", "/healthz", 200, 0.002)
    two.metrics.observe("GET", "/healthz", 503, 0.002)
    gathered = await one.link.metrics()
    total = Metrics()
    total.merge(gathered["rows"])
    assert gathered["processes"] == 2
    assert dict(total.routes[("GET", "/healthz")].statuses) == {200: 2, 503: 1}
    await leave(two)
    await until(lambda: the_hub.children == 1)     # the hub saw the link close
    gathered = await one.link.metrics()
    total = Metrics()
    total.merge(gathered["rows"])
    assert gathered["processes"] == 1
    assert total.routes[("GET", "/healthz")].latency.count == 3
    await leave(one)


async def test_a_malformed_event_is_ignored_and_the_link_goes_on(hub: Any) -> None:
    _, path = hub
    one, two = await join(path, 1), await join(path, 2)
    await one.link.tell({"kind": "session_opened", "mac": "not hex"})
    await one.link.tell({"kind": "no such kind"})
    await one.link.tell({"kind": "login_failed", "client": "c", "name": "n"})
    assert len(two.replica.throttle) == 1
    await leave(one)
    await leave(two)


def test_settings_cross_to_the_children_whole_with_nodes_and_curve_keys() -> None:
    """Settings a child gets from the parent: several nodes and CURVE keys (bytes) survive the
    JSON hop unchanged."""
    public, secret = zmq.curve_keypair()
    settings = dataclasses.replace(SETTINGS, endpoint="tcp://10.0.0.5:7755",
                                   daemons=("tcp://10.0.0.5:7755", "ipc:///srv/b.sock"),
                                   curve=(public, public, secret))
    wire = json.loads(json.dumps(settings_to_wire(settings)))
    assert settings_from_wire(wire) == settings
