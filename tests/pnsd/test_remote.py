"""Remote workers' spec keys and the CURVE key files (no sockets: tests/integration has those)."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq.auth

from pnsd.curve import KeyRing, ensure_server_pair, list_keys, new_key_pair
from pnsd.errors import ConfigError, InvalidSpec
from pnsd.spec import parse_spec


def test_a_pts_may_take_remote_workers_beside_or_instead_of_local_ones() -> None:
    both = parse_spec("p", {"mode": "worker", "entry": "m:f", "workers": 2,
                            "remote_workers": 3})
    assert (both.workers, both.remote_workers, both.slots) == (2, 3, 5)
    only_remote = parse_spec("p", {"mode": "worker", "entry": "m:f", "workers": 0,
                                   "remote_workers": 1})
    assert (only_remote.workers, only_remote.slots) == (0, 1)
    assert parse_spec("p", {"mode": "worker", "entry": "m:f"}).remote_workers == 0
    assert both.public()["remote_workers"] == 3


@pytest.mark.parametrize(("table", "pattern"), [
    ({"workers": 0}, r"'workers' must be between 1 and 256"),
    ({"remote_workers": -1}, r"'remote_workers' must be between 0 and 256"),
    ({"remote_workers": True}, r"'remote_workers' must be an integer"),
])
def test_bad_worker_counts_are_refused(table: dict[str, object], pattern: str) -> None:
    with pytest.raises(InvalidSpec, match=pattern):
        parse_spec("p", {"mode": "worker", "entry": "m:f", **table})


def test_the_server_pair_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = ensure_server_pair(tmp_path / "curve")
    assert ensure_server_pair(tmp_path / "curve") == first
    assert (tmp_path / "curve" / "server.key_secret").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "curve").stat().st_mode & 0o777 == 0o700


def test_a_new_pair_is_authorised_for_its_role_only_and_never_overwritten(
        tmp_path: Path) -> None:
    curve, out = tmp_path / "curve", tmp_path / "out"
    public, secret = new_key_pair(curve, "gpu1", role="workers", out=out)
    assert zmq.auth.load_certificate(str(secret))[1] is not None
    assert (curve / "workers" / "gpu1.key").read_bytes() == public.read_bytes()
    assert list_keys(curve) == {"clients": [], "workers": ["gpu1"]}
    with pytest.raises(ConfigError, match="exists already"):
        new_key_pair(curve, "gpu1", role="workers", out=tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="role must be one of"):
        new_key_pair(curve, "x", role="admins", out=out)
    with pytest.raises(ConfigError, match="bad key name"):
        new_key_pair(curve, "../x", role="clients", out=out)


def test_the_key_ring_sees_a_key_added_after_it_was_read(tmp_path: Path) -> None:
    curve = tmp_path / "curve"
    ensure_server_pair(curve)
    ring = KeyRing(curve)
    ring.refresh()
    public, _secret = new_key_pair(curve, "late", role="clients", out=tmp_path / "out")
    key = zmq.auth.load_certificate(str(public))[0]
    assert not ring.allows("clients", key)
    ring.refresh()
    assert ring.allows("clients", key)
    assert not ring.allows("workers", key)


def test_pnsd_status_shows_where_the_remote_workers_run() -> None:
    from rich.console import Console  # noqa: PLC0415 - only this test draws a table

    from pnsd.terminal import status_table  # noqa: PLC0415

    out = Console(record=True, width=200)
    status_table({"version": "1", "protocol": 1, "uptime": 5, "pts": {"far": {
        "mode": "worker", "state": "ready", "workers": 2, "alive": 2, "busy": 1,
        "each": [{"where": "local"}, {"where": "gpu1"}]}}}, out)
    assert "2/2 alive, 1 busy; remote on gpu1" in out.export_text()
