"""The ``pnsd`` command at the size limit and when its daemon goes: one line, at once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import DaemonProcess, child_env, spawn_daemon
from tests.integration.test_cli import crash
from tests.integration.test_sizes import BIG_PTS, LIMIT, big_home

pytestmark = pytest.mark.slow
ONE_LINE = re.compile(r"pnsd: [a-z_]+: [^\n]+\n")


@pytest.fixture
def small(tmp_path: Path) -> Iterator[DaemonProcess]:
    running = spawn_daemon(big_home(tmp_path / "home"), BIG_PTS)
    try:
        yield running
    finally:
        crash(running)


def test_an_input_file_over_the_limit_is_refused_at_once(small: DaemonProcess,
                                                          tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_text(json.dumps("x" * (3 * LIMIT)))
    started = time.monotonic()
    result = small.cli("run", "echo", "--input-file", str(big), timeout=60)
    assert result.returncode == 1 and time.monotonic() - started < 30
    assert ONE_LINE.fullmatch(result.stderr) and result.stderr.startswith("pnsd: too_large: ")
    assert small.cli("run", "echo", "--input", "5").stdout.strip() == "5"


def test_usage_errors_name_their_code_and_show_no_traceback(small: DaemonProcess,
                                                            tmp_path: Path) -> None:
    missing = small.cli("run", "echo", "--input-file", str(tmp_path / "absent.json"))
    assert missing.returncode == 2 and ONE_LINE.fullmatch(missing.stderr), missing.stderr
    assert missing.stderr.startswith("pnsd: bad_request: cannot read the input file ")
    both = small.cli("run", "echo", "--input", "1", "--input-file", "-")
    assert both.returncode == 2 and both.stderr.startswith("pnsd: bad_request: ")
    for args in (("run", "nope", "--input", "1"), ("jobs", "show", "0" * 32),
                 ("run", "fail", "--input", "1")):
        result = small.cli(*args)
        assert result.returncode == 1 and ONE_LINE.fullmatch(result.stderr), result.stderr


def test_a_result_over_the_limit_is_printed_from_chunks(small: DaemonProcess) -> None:
    job = small.cli("submit", "big", "--input", "{}").stdout.strip()
    with small.client() as client:
        events = list(client.stream("job.watch", {"job": job}, timeout=30))
    assert events[-1]["status"] == "successful"
    shown = small.cli("jobs", "result", job)
    assert shown.returncode == 0, shown.stderr
    outputs = json.loads(shown.stdout)["outputs"]
    assert sorted(outputs) == ["a", "b", "c"]


def test_a_run_notices_its_daemon_went_away(small: DaemonProcess) -> None:
    run = subprocess.Popen(
        [sys.executable, "-m", "pnsd", "run", "sleep", "--input", '{"seconds": 30}', "--home",
         str(small.home), "--config", str(small.config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(small.home))
    try:
        with small.client() as client:
            deadline = time.monotonic() + 30
            while not client.call("status", {})["pts"]["sleep"]["running"]:
                assert time.monotonic() < deadline, "the run did not start"
                time.sleep(0.05)    # polling another process's state: no event to wait on
        crash(small)
        _out, err = run.communicate(timeout=20)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 3 and ONE_LINE.fullmatch(err), err
    assert err.startswith("pnsd: unavailable: ")


@pytest.mark.parametrize("program", ["pnsd", "pnsweb"])
def test_version(program: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", program, "--version"], capture_output=True,
                            text=True, timeout=60, check=False, env=child_env(tmp_path))
    assert result.returncode == 0 and re.fullmatch(rf"{program} \d+\.\d+\.\d+\n", result.stdout)
