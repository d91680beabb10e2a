"""The bench's wrk driver: its Lua script, and a real wrk run counting replies and errors."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from bench import wrk
from harness.procs import free_port


def test_the_script_sets_method_body_and_headers_and_prints_one_json_line() -> None:
    text = wrk.script("POST", b'{"inputs": {"value": 1}}', {"Authorization": "Basic YTpi"})
    assert 'wrk.method = "POST"' in text
    assert 'wrk.body = [==[{"inputs": {"value": 1}}]==]' in text
    assert 'wrk.headers["Authorization"] = "Basic YTpi"' in text
    assert "done = function(summary, latency, requests)" in text and wrk.MARK in text
    with pytest.raises(ValueError, match="cannot be quoted"):
        wrk.script("POST", b'"]==]"', {})


@pytest.fixture
def server() -> Iterator[str]:
    """The standard library's file server: GET answers 200, POST 501."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                                "127.0.0.1"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)   # a starting process: nothing to wait on but its port
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.skipif(wrk.path() is None, reason="wrk is not installed (make bench installs it)")
def test_a_run_counts_good_replies_and_refusals(server: str) -> None:
    good = wrk.run(server, method="GET", body=b"", headers={}, conns=1, seconds=1, timeout=5)
    assert good["ok"] > 0 and good["errors"] == 0 and 0 < good["p50"] <= good["p99"]
    refused = wrk.run(server, method="POST", body=b"{}", headers={}, conns=1, seconds=1,
                      timeout=5)
    assert refused["ok"] == 0 and refused["errors"] > 0
