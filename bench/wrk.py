"""HTTP load with wrk, as users measure: the distribution's ``wrk``, driven by a Lua script.

Owns making sure wrk is there (:func:`ensure`: ``apt-get install wrk`` when it is missing and
we are root, as ``make bench`` runs; otherwise the Python client of :mod:`bench.httpload`
stays the load) and one timed run (:func:`run`): the request's method, body and headers are
set by a Lua script, whose ``done`` hook prints the figures as one JSON line. wrk counts
replies that are not 2xx or 3xx as errors (``status_errors``); it does not read bodies, so the
caller checks one reply's body with the Python client first (its warm-up).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

MARK = "PNSBENCH "
THREADS = 1           # one wrk thread leaves the second core to the server under test
_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,'
    .. '"p50_us":%d,"p99_us":%d}\\n', "{mark}", summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def path() -> str | None:
    return shutil.which("wrk")


def ensure() -> str:
    """Install wrk with apt-get if it is missing and we are root; "" when it is there, else
    why not (the HTTP rows then use the Python client)."""
    if path():
        return ""
    if os.geteuid() != 0:
        return "wrk is not installed (apt-get install wrk, as root)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False,
                              timeout=600)
        if done.returncode != 0 and argv[1] == "install":
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            return f"apt-get install wrk failed: {tail[0]}"
    return "" if path() else "apt-get install wrk left no wrk on PATH"


def script(method: str, body: bytes, headers: dict[str, str]) -> str:
    """The Lua script that makes wrk send this request and print its figures."""
    text = body.decode()
    if "]==]" in text:
        raise ValueError("a body holding ]==] cannot be quoted in the Lua script")
    lines = [f'wrk.method = "{method}"', f"wrk.body = [==[{text}]==]"]
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    return "\n".join(lines) + _DONE.replace("{mark}", MARK)


def run(url: str, *, method: str, body: bytes, headers: dict[str, str], conns: int,
        seconds: float, timeout: float) -> dict[str, Any]:
    """One timed wrk run against ``url``: ok, errors, elapsed (s), p50 and p99 (s)."""
    wrk = path()
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    with tempfile.TemporaryDirectory(prefix="pnswrk") as tmp:
        lua = Path(tmp) / "request.lua"
        lua.write_text(script(method, body, headers))
        argv = [wrk, "-t", str(min(THREADS, conns)), "-c", str(conns),
                # wrk takes whole seconds only
                "-d", f"{max(1, round(seconds))}s", "--timeout", f"{max(1, round(timeout))}s",
                "-s", str(lua),
                url]
        done = subprocess.run(argv, capture_output=True, text=True, check=False,
                              timeout=seconds * 3 + 60)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(MARK)), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {(done.stderr or done.stdout)[-300:]}")
    figures = json.loads(line[len(MARK):])
    errors = figures["status_errors"] + figures["socket_errors"]
    return {"ok": max(0, figures["requests"] - figures["status_errors"]), "errors": errors,
            "elapsed": figures["duration_us"] / 1e6, "p50": figures["p50_us"] / 1e6,
            "p99": figures["p99_us"] / 1e6}
