"""pnsweb on several processes (``--workers 2``), real ones in front of a real pnsd.

Every request here opens a new connection, so the kernel spreads them over the children
(SO_REUSEPORT hashes each connection's ports): what one child records, the next request may
ask another about. The children are found as the pnsweb parent's child processes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.console_web import ADMIN, USER, ConsoleNode, start_console_node

pytestmark = pytest.mark.slow
TIMEOUT = 30.0
WIDE = 8          # requests on fresh connections to reach both children (all but surely)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ConsoleNode]:
    running = start_console_node(tmp_path, workers=2)
    try:
        yield running
    finally:
        running.stop()


def fetch(url: str, *, method: str = "GET", body: Any = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a connection of its own: status, headers, body."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if data is not None else {}),
        **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def children(node: ConsoleNode) -> set[int]:
    return {child.pid for child in psutil.Process(node.web.pid).children()}


def wait_for(check: Any, what: str) -> None:
    """Poll another process's state (no event to wait on) until ``check()``, or fail."""
    deadline = time.monotonic() + TIMEOUT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {TIMEOUT:g} s: {what}")
        time.sleep(0.05)


def metric(text: str, pattern: str) -> float:
    found = re.search(rf"^{pattern} (\S+)$", text, re.MULTILINE)
    assert found, f"no {pattern} in the scrape"
    return float(found.group(1))


HEALTHZ = r'pnsweb_requests_total\{method="GET",route="/healthz",status="200"\}'


def scrape(node: ConsoleNode) -> str:
    status, _, body = fetch(f"{node.url}/metrics")
    assert status == 200
    return body.decode()


def test_metrics_sum_every_process_and_keep_a_dead_childs_counts(node: ConsoleNode) -> None:
    assert len(children(node)) == 2
    for _ in range(30):
        assert fetch(f"{node.url}/healthz")[0] == 200
    for _ in range(WIDE):       # whichever child answers the scrape, it shows all 30
        text = scrape(node)
        assert metric(text, HEALTHZ) == 30
        assert metric(text, "pnsweb_processes") == 2
    victim = min(children(node))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(children(node)) == 2 and victim not in children(node),
             "the parent started a child in place of the killed one")
    wait_for(lambda: metric(scrape(node), "pnsweb_processes") == 2, "the new child serves")
    assert metric(scrape(node), HEALTHZ) == 30      # the dead child's requests still count


def test_login_back_off_holds_across_processes(node: ConsoleNode) -> None:
    jobs = f"{node.url}/v1/jobs"
    for _ in range(6):          # 5 failures are free; the 6th makes this client wait 1 s
        assert fetch(jobs, headers=basic(ADMIN[0], "wrong"))[0] == 401
    for _ in range(4):          # right or wrong, on any child: wait first
        status, headers, _ = fetch(jobs, headers=basic(*ADMIN))
        assert status == 429 and headers["Retry-After"] == "1"
    assert fetch(jobs, headers=basic(*USER))[0] == 200    # another name is not slowed


def console_login(node: ConsoleNode) -> str:
    status, headers, _ = fetch(f"{node.url}/console/api/login", method="POST",
                               body={"user": USER[0], "password": USER[1]},
                               headers={"Origin": node.url})
    assert status == 200
    return headers["Set-Cookie"].split(";")[0]


def signed_in_everywhere(node: ConsoleNode, cookie: str) -> set[int]:
    return {fetch(f"{node.url}/console/api/me", headers={"Cookie": cookie})[0]
            for _ in range(WIDE)}


def test_console_sessions_hold_across_processes_and_restarts(node: ConsoleNode) -> None:
    cookie = console_login(node)
    assert signed_in_everywhere(node, cookie) == {200}
    victim = min(children(node))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(children(node)) == 2 and victim not in children(node),
             "the parent started a child in place of the killed one")
    wait_for(lambda: metric(scrape(node), "pnsweb_processes") == 2, "the new child serves")
    assert signed_in_everywhere(node, cookie) == {200}    # the new child got the sessions
    status, _, _ = fetch(f"{node.url}/console/api/logout", method="POST", body={},
                         headers={"Cookie": cookie, "Origin": node.url})
    assert status == 200
    assert signed_in_everywhere(node, cookie) == {401}


def test_job_events_stream_from_every_process(node: ConsoleNode) -> None:
    status, headers, body = fetch(
        f"{node.url}/v1/processes/echo/execution", method="POST",
        body={"inputs": {"value": "hi"}},
        headers={**basic(*USER), "Prefer": "respond-async"})
    assert status == 201, body
    events = headers["Location"] + "/events"
    for _ in range(WIDE):
        status, headers, body = fetch(events, headers=basic(*USER))
        assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
        data = [json.loads(line) for line in re.findall(r"^data: (.*)$", body.decode(),
                                                         re.MULTILINE)]
        assert [d["seq"] for d in data] == list(range(1, len(data) + 1))
        assert data[-1]["status"] == "successful", body
        assert fetch(events, headers={**basic(*USER), "Last-Event-ID": "99"})[0] == 200


def test_sigterm_stops_every_child(node: ConsoleNode) -> None:
    pids = children(node)
    assert len(pids) == 2
    node.web.send_signal(signal.SIGTERM)
    assert node.web.wait(timeout=TIMEOUT) == 0
    assert not any(psutil.pid_exists(pid) for pid in pids)
