"""Operations endpoints: /healthz, /readyz and /metrics, with a fake daemon."""

from __future__ import annotations

import re
from typing import Any

import pytest

from pnsweb import routes_ops
from pnsweb.app import create_app
from pnsweb.metrics import Metrics
from tests.pnsweb.fakes import FakeDaemon
from tests.pnsweb.fakes_v1 import AUTH, demo_daemon, record, settings, status_reply


@pytest.fixture
def book_and_daemon() -> Any:
    return demo_daemon()


@pytest.fixture
def daemon(book_and_daemon: Any) -> FakeDaemon:
    return book_and_daemon[0]  # type: ignore[no-any-return]


@pytest.fixture
async def client(aiohttp_client: Any, daemon: FakeDaemon) -> Any:
    return await aiohttp_client(create_app(settings(), client=daemon))


async def test_healthz_answers_without_asking_the_daemon(client: Any, daemon: FakeDaemon) -> None:
    daemon.down()
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    assert daemon.calls == []


async def test_readyz_is_200_when_every_pts_is_ready(client: Any) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ready"
    assert body["pts"]["echo"] == "ready"


async def test_readyz_is_503_naming_each_degraded_pts_and_why(
        client: Any, daemon: FakeDaemon) -> None:
    daemon.reply("status", status_reply(**{"hello-worker": "unavailable", "sleep": "starting"}))
    response = await client.get("/readyz")
    assert response.status == 503
    assert response.headers["Retry-After"] == "5"
    body = await response.json()
    assert body["status"] == "degraded"
    assert body["degraded"] == {
        "hello-worker": {"state": "unavailable", "reason": "hello-worker is unavailable"},
        "sleep": {"state": "starting", "reason": "sleep is starting"},
    }


async def test_readyz_is_503_when_the_daemon_is_unreachable(
        client: Any, daemon: FakeDaemon) -> None:
    daemon.down()
    response = await client.get("/readyz")
    assert response.status == 503
    assert "Retry-After" in response.headers
    body = await response.json()
    assert body["daemon"]["reachable"] is False
    assert "not reachable" in body["daemon"]["reason"]


async def test_readyz_gives_up_on_a_slow_daemon_within_its_timeout(
        client: Any, daemon: FakeDaemon) -> None:
    daemon.time_out("status")
    response = await client.get("/readyz")
    assert response.status == 503
    assert daemon.calls_of("status")[-1].timeout == routes_ops.READY_TIMEOUT


async def test_readyz_is_503_while_the_daemon_shuts_down(client: Any, daemon: FakeDaemon) -> None:
    daemon.reply("status", {**status_reply(), "accepting": False})
    assert (await client.get("/readyz")).status == 503


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition (labels matched as a subset)."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(2))
    raise AssertionError(f"no sample {name} {labels} in:\n{text}")


async def test_metrics_count_requests_by_canonical_route_and_status(
        client: Any, book_and_daemon: Any) -> None:
    _daemon, book = book_and_daemon
    job = book.add(record("echo", "successful"))
    for _ in range(2):
        await client.get(f"/v1/jobs/{job['id']}", headers=AUTH)
    await client.get("/v1/jobs/0123456789abcdef0123456789abcdef", headers=AUTH)
    await client.get("/no/such/path")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    assert sample(text, "pnsweb_requests_total", route="/v1/jobs/{jobId}", status="200") == 2
    assert sample(text, "pnsweb_requests_total", route="/v1/jobs/{jobId}", status="404") == 1
    assert sample(text, "pnsweb_requests_total", route="unmatched", status="404") == 1
    assert job["id"] not in text
    assert sample(text, "pnsweb_request_duration_seconds_count",
                  route="/v1/jobs/{jobId}", method="GET") == 3
    assert sample(text, "pnsweb_request_duration_seconds_bucket",
                  route="/v1/jobs/{jobId}", le="+Inf") == 3


async def test_metrics_label_each_faces_routes_with_their_full_paths(client: Any) -> None:
    await client.post("/v0.6/echo", json={"a": 1})
    await client.get("/v0.6")
    await client.get("/v1/processes/echo")
    await client.get("/v1/nothing")
    text = await (await client.get("/metrics")).text()
    assert sample(text, "pnsweb_requests_total", route="/v0.6/echo", status="200") == 1
    assert sample(text, "pnsweb_requests_total", route="/v0.6", status="200") == 1
    assert sample(text, "pnsweb_requests_total", route="/v1/processes/{processId}",
                  status="200") == 1
    assert sample(text, "pnsweb_requests_total", route="unmatched", status="404") == 1
    assert 'route="/echo"' not in text and 'route="/processes' not in text


async def test_metrics_include_the_daemons_figures(client: Any, book_and_daemon: Any) -> None:
    daemon, book = book_and_daemon
    busy = status_reply()
    busy["pts"]["sleep"].update(running=2, queued=5, restarts=3)
    daemon.reply("status", busy)
    book.add(record("echo", "successful"))
    book.add(record("echo", "failed"))
    book.add(record("echo", "failed"))
    text = await (await client.get("/metrics")).text()
    assert sample(text, "pns_daemon_up") == 1
    assert sample(text, "pns_pts_running", pts="sleep") == 2
    assert sample(text, "pns_pts_queued", pts="sleep") == 5
    assert sample(text, "pns_worker_restarts_total", pts="sleep") == 3
    assert sample(text, "pns_jobs", status="failed") == 2
    assert sample(text, "pns_jobs", status="running") == 0
    assert sample(text, "pns_store_commits_total") == 7


async def test_metrics_types_follow_prometheus_naming(client: Any, book_and_daemon: Any) -> None:
    daemon, _book = book_and_daemon
    reply = status_reply()
    reply["pts"]["sleep"].update(restarts=1)
    reply["store"].update(write_errors=2, lost=1)
    daemon.reply("status", reply)
    text = await (await client.get("/metrics")).text()
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE"))
    for name, kind in types.items():
        assert name.endswith("_total") == (kind == "counter"), (name, kind)
    for counter in ("pns_store_commits_total", "pns_store_write_errors_total",
                    "pns_store_lost_total", "pns_worker_restarts_total", "pnsweb_requests_total"):
        assert types[counter] == "counter"
    for gauge in ("pns_store_queued", "pns_store_pending", "pns_pts_running", "pns_jobs"):
        assert types[gauge] == "gauge"
    assert sample(text, "pns_store_write_errors_total") == 2


async def test_metrics_count_the_messages_the_daemon_refused_by_reason(
        client: Any, daemon: FakeDaemon) -> None:
    reply = status_reply()
    reply["refusals"] = {"refused": {"auth": 46000, "replay": 3}, "unanswered": 45900}
    daemon.reply("status", reply)
    text = await (await client.get("/metrics")).text()
    assert "# TYPE pns_protocol_refused_total counter" in text
    assert sample(text, "pns_protocol_refused_total", reason="auth") == 46000
    assert sample(text, "pns_protocol_refused_total", reason="replay") == 3


async def test_metrics_still_answer_when_the_daemon_is_down(
        client: Any, daemon: FakeDaemon) -> None:
    daemon.down()
    response = await client.get("/metrics")
    assert response.status == 200
    assert sample(await response.text(), "pns_daemon_up") == 0


async def test_failed_execution_is_counted_with_its_final_status(
        client: Any, daemon: FakeDaemon) -> None:
    daemon.fail("run", "busy", "queue full")
    response = await client.post("/v1/processes/echo/execution",
                                 json={"inputs": {"value": 1}}, headers=AUTH)
    assert response.status == 429
    text = await (await client.get("/metrics")).text()
    assert sample(text, "pnsweb_requests_total", route="/v1/processes/{processId}/execution",
                  status="429", method="POST") == 1


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    metrics.observe("GET", 'a"b\\c\nd', 200, 0.01)
    assert 'route="a\\"b\\\\c\\nd"' in "\n".join(metrics.render())


def test_histogram_buckets_are_cumulative() -> None:
    metrics = Metrics()
    for seconds in (0.0005, 0.003, 0.003, 100.0):
        metrics.observe("GET", "/x", 200, seconds)
    text = "\n".join(metrics.render())
    assert sample(text, "pnsweb_request_duration_seconds_bucket", le="0.001") == 1
    assert sample(text, "pnsweb_request_duration_seconds_bucket", le="0.005") == 3
    assert sample(text, "pnsweb_request_duration_seconds_bucket", le="60") == 3
    assert sample(text, "pnsweb_request_duration_seconds_bucket", le="+Inf") == 4
