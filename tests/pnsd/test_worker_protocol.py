"""The worker protocol version a worker's hello leads to, and the ``transport`` spec key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pnsd.errors import InvalidSpec
from pnsd.hosts.handshake import choose_protocol
from pnsd.hosts.workerslot import worker_command
from pnsd.spec import parse_spec


@pytest.mark.parametrize(("hello", "chosen"), [
    ({}, 1),                                  # no range: a version-1 worker
    ({"protocols": [1, 2]}, 2),
    ({"protocols": [1, 1]}, 1),
    ({"protocols": [2, 9]}, 2),
    ({"protocols": (1, 2)}, 2),
])
def test_the_highest_shared_version_is_chosen(hello: dict[str, Any], chosen: int) -> None:
    assert choose_protocol(hello) == (chosen, "")


@pytest.mark.parametrize(("announced", "reason"), [
    ([3, 4], "worker speaks protocol 3-4; this daemon speaks 1-2"),
    ([2, 1], "malformed protocol range [2, 1]"),
    ([0, 0], "malformed protocol range"),
    ([1], "malformed protocol range"),
    ("1-2", "malformed protocol range"),
    ([True, 2], "malformed protocol range"),
    ([1.0, 2], "malformed protocol range"),
    (None, "malformed protocol range None"),
])
def test_a_range_without_a_shared_version_is_refused_with_the_reason(announced: Any,
                                                                     reason: str) -> None:
    chosen, refusal = choose_protocol({"protocols": announced})
    assert chosen == 0 and reason in refusal and "this daemon speaks 1-2" in refusal


def test_a_stdio_spec_starts_the_stdio_runtime() -> None:
    spec = parse_spec("s", {"mode": "worker", "entry": "m:f", "transport": "stdio"})
    assert spec.transport == "stdio" and spec.public()["transport"] == "stdio"
    argv = worker_command(spec, "stdio", Path("/k"), 1.0)
    assert argv[1:5] == ["-m", "protocols.stdioworker", "--connect", "stdio"]
    assert parse_spec("z", {"mode": "worker", "entry": "m:f"}).transport == "zmq"


@pytest.mark.parametrize(("table", "error"), [
    ({"mode": "worker", "entry": "m:f", "transport": "pipes"}, "'transport' must be one of"),
    ({"mode": "worker", "entry": "m:f", "transport": 1}, "'transport' must be a string"),
    ({"mode": "process", "run": ["x"], "transport": "stdio"}, "worker mode only"),
    ({"mode": "inproc", "entry": "m:f", "transport": "stdio"}, "worker mode only"),
])
def test_a_bad_transport_is_refused(table: dict[str, Any], error: str) -> None:
    with pytest.raises(InvalidSpec, match=error):
        parse_spec("s", table)
