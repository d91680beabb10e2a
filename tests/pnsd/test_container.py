"""A worker spec's ``container`` table and the command line and files a container launch uses."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq

from pnsd.errors import InvalidSpec, Unavailable
from pnsd.hosts import container
from pnsd.hosts.worker import WorkerHost
from pnsd.hosts.workerslot import PROTOCOLS_DIR, Launch, worker_command
from pnsd.spec import Container, PtsSpec, parse_spec


def spec_with(**table: object) -> PtsSpec:
    return parse_spec("c", {"mode": "worker", "entry": "m:f", **table})


def test_a_container_table_is_parsed_with_podman_by_default_and_round_trips() -> None:
    spec = parse_spec("c", {"mode": "worker", "entry": "m:f", "container": {
        "image": "localhost/img:1", "options": ["--network", "none"]}})
    assert spec.container == Container(("podman",), "localhost/img:1", ("--network", "none"))
    public = {k: v for k, v in spec.public().items() if k != "name" and v is not None}
    assert parse_spec("c", public).container == spec.container
    assert parse_spec("c", {"mode": "worker", "entry": "m:f"}).container is None


@pytest.mark.parametrize(("table", "message"), [
    ({"mode": "worker", "container": {"image": ""}}, "needs an image"),
    ({"mode": "worker", "container": {"image": "--privileged"}}, "needs an image"),
    ({"mode": "worker", "container": {"image": "i", "volumes": []}}, "table of runtime"),
    ({"mode": "worker", "container": "podman"}, "table of runtime"),
    ({"mode": "worker", "container": {"image": "i", "runtime": [""]}}, "runtime"),
    ({"mode": "inproc", "container": {"image": "i"}}, "worker mode only"),
    ({"mode": "process", "run": ["x"], "container": {"image": "i"}}, "worker mode only"),
])
def test_a_bad_container_table_is_refused_naming_it(table: dict[str, object],
                                                   message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_spec("c", {"entry": "m:f", **table})


def test_the_run_prefix_names_labels_mounts_and_passes_variables() -> None:
    box = Container(("podman", "--runtime", "runc"), "img", ("--network", "none"))
    argv = container.run_prefix(box, "pns-c-t-w0.1", mounts=[Path("/a"), Path("/b"), Path("/a")],
                                env_names=["PYTHONPATH", "X"], run_dir=Path("/run/pns"),
                                generation="t")
    assert argv[:8] == ["podman", "--runtime", "runc", "run", "--rm", "-i", "--name",
                        "pns-c-t-w0.1"]
    assert f"pns.daemon={container.DAEMON}" in argv and "pns.generation=t" in argv
    assert "pns.run=/run/pns" in argv
    assert argv.count("-v") == 2 and "/a:/a" in argv and "/b:/b" in argv
    assert argv[-5:] == ["-e", "X", "--network", "none", "img"]


def test_a_container_runs_the_images_python3_unless_told_otherwise(tmp_path: Path) -> None:
    boxed = spec_with(container={"image": "i"})
    argv = worker_command(boxed, "ipc:///s", tmp_path / "k", 1.0)
    assert argv[:3] == ["python3", "-m", "protocols.worker"]
    own = spec_with(container={"image": "i"}, python="/opt/py/bin/python")
    assert worker_command(own, "ipc:///s", tmp_path / "k", 1.0)[0] == "/opt/py/bin/python"


def test_a_container_launch_gets_a_private_dir_and_mounts_only_what_it_needs(
        tmp_path: Path) -> None:
    spec = spec_with(container={"image": "i", "runtime": ["true"]}, pythonpath=[str(tmp_path)],
                     env={"A": "1"})
    launch = Launch()
    launch.prepare(spec, run_dir=tmp_path / "run", key=b"k", key_file=None, heartbeat=1.0)
    holder = tmp_path / "run" / f"w-c-{launch.token}"
    assert (holder.stat().st_mode & 0o777) == 0o700
    assert launch.endpoint == f"ipc://{holder}/w.sock"
    assert set(launch.mounts) == {holder, holder / "w.lib", PROTOCOLS_DIR, holder / "w.key",
                                  tmp_path.resolve()}
    assert launch.env_names == ["A"] and launch.run_dir == (tmp_path / "run").resolve()
    launch.remove()
    assert list((tmp_path / "run").iterdir()) == []


async def test_a_missing_container_runtime_fails_start_naming_it(tmp_path: Path) -> None:
    spec = spec_with(container={"image": "i", "runtime": ["/no/such/podman"]})
    context = zmq.Context()
    host = WorkerHost(spec, context=context, run_dir=tmp_path / "run", key=b"k")
    try:
        with pytest.raises(Unavailable, match=r"No such file or directory \(/no/such/podman\)"):
            await host.start()
    finally:
        context.term()
    assert host.state().state == "unavailable"
    assert list((tmp_path / "run").iterdir()) == []
