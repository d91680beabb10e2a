"""A worker-mode PTS in an older interpreter (pyenv, 3.8+) with only pyzmq and msgpack."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq.asyncio

from pnsd.hosts.worker import WorkerHost
from pnsd.hosts.workerslot import WorkerTuning
from pnsd.spec import parse_spec
from protocols.context import RunContext

pytestmark = pytest.mark.slow

PTS_MODULE = '''
import sys

def version(data, ctx):
    ctx.log("running on %d.%d" % sys.version_info[:2])
    return list(sys.version_info[:2])
'''


def _oldest_pyenv_python() -> tuple[tuple[int, int], Path] | None:
    """The version and path of the oldest pyenv interpreter that is at least 3.8, or None."""
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    found = []
    for python in Path(root, "versions").glob("*/bin/python"):
        parts = python.parent.parent.name.split(".")
        if len(parts) >= 2 and parts[0] == "3" and parts[1].isdigit() and int(parts[1]) >= 8:
            found.append(((3, int(parts[1])), python))
    return min(found) if found else None


@pytest.fixture(scope="session")
def old_python(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[int, int], Path]:
    """A venv of the oldest pyenv Python >= 3.8 with pyzmq and msgpack, made once per session."""
    oldest = _oldest_pyenv_python()
    if oldest is None:
        pytest.skip("no pyenv interpreter >= 3.8 on this machine")
    version, base = oldest
    venv = tmp_path_factory.mktemp("py-old") / "venv"
    made = subprocess.run([str(base), "-m", "venv", str(venv)], capture_output=True,
                          text=True, timeout=120, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv with {base}: {made.stderr.strip()[-300:]}")
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "pyzmq", "msgpack"], capture_output=True, text=True, timeout=240, check=False)
    if installed.returncode != 0:
        pytest.skip(f"no package index reachable for {base}: {installed.stderr.strip()[-300:]}")
    return version, python


@pytest.fixture
async def context() -> AsyncIterator[zmq.asyncio.Context]:
    context = zmq.Context()
    yield context
    context.term()


@pytest.mark.timeout(300)
async def test_a_worker_runs_under_an_older_python_than_the_daemon(
        old_python: tuple[tuple[int, int], Path], tmp_path: Path,
        context: zmq.asyncio.Context) -> None:
    version, python = old_python
    (tmp_path / "oldpts.py").write_text(PTS_MODULE)
    spec = parse_spec("old", {"mode": "worker", "entry": "oldpts:version", "workers": 1,
                              "python": str(python), "pythonpath": [str(tmp_path)]})
    host = WorkerHost(spec, context=context, run_dir=tmp_path / "run", key=b"k" * 32,
                      tuning=WorkerTuning(start_timeout=60.0))
    await host.start()
    try:
        lines: list[str] = []
        result = await host.run(None, timeout=30, ctx=RunContext("j", None, lines.append))
    finally:
        await host.stop(grace=2.0)
    assert result == list(version)                  # [3, 8] here, while the daemon runs 3.11
    assert result != list(sys.version_info[:2])
    assert lines == [f"running on {version[0]}.{version[1]}"]
