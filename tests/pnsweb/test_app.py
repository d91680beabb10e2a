"""The app shell: JSON for every error status, request ids, body limit, daemon outages."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
import structlog
import uvloop
from aiohttp import web
from structlog.testing import capture_logs

from pnsweb import cli
from pnsweb.app import create_app
from pnsweb.errors import CODE_STATUS, ApiError, from_remote
from pnsweb.keys import CLIENT
from pnsweb.settings import SettingsError, load_settings
from pnsweb.views_v06_envelope import Stamp
from protocols.errors import ErrorCode, RemoteError
from tests.pnsweb.fakes import FakeDaemon, demo_daemon, users, web_settings


@pytest.fixture
def daemon() -> FakeDaemon:
    return demo_daemon()


def _app(daemon: FakeDaemon, **settings: Any) -> web.Application:
    app = create_app(web_settings(**settings), client=daemon)

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internals /etc/shadow")

    async def ping(request: web.Request) -> web.Response:
        return web.json_response(await request.app[CLIENT].call("ping", {}))

    async def plain_error(request: web.Request) -> web.Response:
        return web.Response(status=418, text="short and stout")

    app.router.add_get("/test/boom", boom)
    app.router.add_get("/v0.6/test/boom", boom)
    app.router.add_get("/test/ping", ping)
    app.router.add_get("/test/teapot", plain_error)
    return app


@pytest.fixture
async def client(aiohttp_client: Any, daemon: FakeDaemon) -> Any:
    return await aiohttp_client(_app(daemon))


async def test_unknown_v06_path_is_a_json_404_envelope(client: Any) -> None:
    resp = await client.get("/v0.6/nothing-here")
    assert resp.status == 404
    body = await resp.json()
    assert body["error"] == "Not found."
    assert isinstance(body["timestamp"], float)


async def test_unknown_other_path_is_problem_json(client: Any) -> None:
    resp = await client.get("/nothing-here")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["status"] == 404 and body["title"] == "Not Found" and body["type"]
    assert "detail" in body


@pytest.mark.parametrize(("path", "shape"), [
    ("/v0.6/nothing", "envelope"), ("/v0.6/echo/more", "envelope"), ("/v1/nothing", "problem"),
    ("/v0.6x", "problem"), ("/v1x/processes", "problem"), ("/", "problem"),
])
async def test_a_404_takes_the_shape_of_the_app_that_routed_it(
        client: Any, path: str, shape: str) -> None:
    resp = await client.get(path)
    body = await resp.json()
    assert resp.status == 404
    if shape == "envelope":
        assert resp.content_type == "application/json"
        assert set(body) == {"error", "message", "timestamp"}
    else:
        assert resp.content_type == "application/problem+json"
        assert body["status"] == 404 and body["type"] == "about:blank"


async def test_the_shape_is_the_serving_apps_not_the_paths(client: Any) -> None:
    # a route of the root app whose path merely starts like the /v0.6 face's: root shape
    resp = await client.get("/v0.6/test/boom")
    assert resp.status == 500 and resp.content_type == "application/problem+json"
    assert (await resp.json())["status"] == 500


async def test_a_wrong_method_in_the_v1_face_is_its_problem_json_405(client: Any) -> None:
    resp = await client.patch("/v1/processes")
    assert resp.status == 405 and resp.content_type == "application/problem+json"
    assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
    assert "PATCH" in (await resp.json())["detail"]


async def test_a_daemon_error_in_each_face_uses_that_faces_statuses(
        client: Any, daemon: FakeDaemon) -> None:
    daemon.fail("pts.list", ErrorCode.BUSY, "busy")
    daemon.fail("pts.script", ErrorCode.BUSY, "busy")
    v1 = await client.get("/v1/processes")
    v06 = await client.get("/v0.6/init")
    assert (v1.status, v1.content_type) == (429, "application/problem+json")
    assert (v06.status, (await v06.json())["error"]) == (409, "Conflict. Updating.")


async def test_wrong_method_is_405_with_allow_and_json(client: Any) -> None:
    resp = await client.get("/v0.6/echo")
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    body = await resp.json()
    assert body["error"] == "Method not allowed." and "POST" in body["message"]


async def test_wrong_method_elsewhere_is_problem_json_with_allow(client: Any) -> None:
    resp = await client.post("/test/ping")
    assert resp.status == 405
    assert set(resp.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert (await resp.json())["status"] == 405


@pytest.mark.parametrize("path", ["/test/boom", "/v0.6/test/boom"])
async def test_unexpected_exception_is_500_without_internals(client: Any, path: str) -> None:
    resp = await client.get(path)
    assert resp.status == 500
    text = await resp.text()
    assert "secret internals" not in text and "Traceback" not in text
    assert resp.content_type in ("application/json", "application/problem+json")


async def test_a_non_json_error_response_is_made_json(client: Any) -> None:
    resp = await client.get("/test/teapot")
    assert resp.status == 418
    assert (await resp.json())["status"] == 418


async def test_body_over_the_limit_is_413_json(aiohttp_client: Any, daemon: FakeDaemon) -> None:
    client = await aiohttp_client(_app(daemon, max_body=1024))
    resp = await client.post("/v0.6/echo", data=b'"' + b"x" * 2000 + b'"')
    assert resp.status == 413
    body = await resp.json()
    assert body["error"] == "Payload too large."


async def test_request_id_is_echoed(client: Any) -> None:
    resp = await client.get("/v0.6/", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"


async def test_request_id_is_generated_when_absent_or_unsafe(client: Any) -> None:
    first = await client.get("/v0.6/")
    bad = await client.get("/v0.6/", headers={"X-Request-ID": "evil\tid" + "x" * 200})
    ids = {first.headers["X-Request-ID"], bad.headers["X-Request-ID"]}
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)


async def test_errors_carry_the_request_id_too(client: Any) -> None:
    resp = await client.get("/nothing", headers={"X-Request-ID": "r1"})
    assert resp.status == 404 and resp.headers["X-Request-ID"] == "r1"


async def test_an_error_gets_one_summary_line_with_its_request_id(client: Any) -> None:
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await client.get("/nothing", headers={"X-Request-ID": "r-404"})
    lines = [line for line in logs if line["event"] == "request_finished"]
    assert len(lines) == 1
    assert lines[0]["log_level"] == "info" and lines[0]["status"] == 404
    assert lines[0]["request_id"] == "r-404" and lines[0]["path"] == "/nothing"


async def test_every_request_gets_one_summary_line(client: Any) -> None:
    with capture_logs() as logs:
        assert (await client.get("/healthz")).status == 200
    lines = [line for line in logs if line["event"] == "request_finished"]
    assert [(line["log_level"], line["status"]) for line in lines] == [("info", 200)]


async def test_daemon_down_is_503_with_retry_after_then_recovers(
    client: Any, daemon: FakeDaemon
) -> None:
    daemon.down()
    resp = await client.get("/v0.6/init")
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) > 0
    assert (await resp.json())["error"] == "Service unavailable."
    daemon.up()
    assert (await client.get("/v0.6/init")).status == 200


async def test_daemon_not_answering_in_time_is_503(client: Any, daemon: FakeDaemon) -> None:
    daemon.time_out("ping")
    resp = await client.get("/test/ping")
    assert resp.status == 503
    assert "Retry-After" in resp.headers
    assert resp.content_type == "application/problem+json"


async def test_busy_is_429_outside_v06_and_409_on_v06(client: Any, daemon: FakeDaemon) -> None:
    daemon.fail("ping", ErrorCode.BUSY, "hello is busy")
    daemon.fail("pts.script", ErrorCode.BUSY, "hello is busy")
    resp = await client.get("/test/ping")
    assert resp.status == 429 and resp.headers["Retry-After"] == "1"
    resp = await client.get("/v0.6/init")
    assert resp.status == 409
    assert (await resp.json())["error"] == "Conflict. Updating."


def test_every_protocol_error_code_has_a_status() -> None:
    assert set(CODE_STATUS) == set(ErrorCode.ALL)
    for code, mapped in CODE_STATUS.items():
        assert 400 <= mapped.status < 600, code
        # 401 is for the caller's credentials only, never for something the daemon says
        assert mapped.status != 401, code


@pytest.mark.parametrize(
    ("code", "status"),
    [("bad_request", 400), ("not_found", 404), ("conflict", 409), ("busy", 429),
     ("unavailable", 503), ("timeout", 504), ("pts_error", 502), ("too_large", 413),
     ("forbidden", 403), ("internal", 500), ("auth", 502), ("no-such-code", 500)],
)
def test_remote_errors_map_through_the_table(code: str, status: int) -> None:
    assert from_remote(RemoteError(code, "x")).status == status


def test_a_failed_run_keeps_its_outcome() -> None:
    error = from_remote(RemoteError("timeout", "run exceeded 1 s", {
        "command": ["/bin/sleepPTS"], "returncode": -9, "stdout": "", "stderr": "", "job": "j"}))
    assert error.status == 504
    assert error.outcome == {"command": "['/bin/sleepPTS']", "returncode": -9, "stdout": "",
                             "stderr": ""}


def test_api_error_defaults_to_the_status_phrase() -> None:
    error = ApiError(404)
    assert error.title == "Not Found" and error.detail == "Not Found"


def test_stamp_strictly_increases_even_when_the_clock_stands_still() -> None:
    stamp = Stamp(clock=lambda: 1_700_000_000.0)
    readings = [stamp.now() for _ in range(1000)]
    assert all(a < b for a, b in itertools.pairwise(readings))


def test_stamp_never_goes_back_when_the_clock_does() -> None:
    times = iter([100.0, 50.0, 101.0])
    stamp = Stamp(clock=lambda: next(times))
    first, second, third = stamp.now(), stamp.now(), stamp.now()
    assert first < second < third and third == 101.0


async def test_timestamps_strictly_increase_across_replies_and_errors(client: Any) -> None:
    stamps = []
    for path in ["/v0.6/", "/v0.6/init", "/v0.6/nothing", "/v0.6/echo", "/v0.6/api"] * 5:
        body = await (await client.get(path)).json()
        stamps.append(body["timestamp"])
    assert all(a < b for a, b in itertools.pairwise(stamps))


# -- settings from the shared config file, and the command line -------------------------------

def _home_with_key(tmp_path: Path, mode: int = 0o600) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    key = home / "secret.key"
    key.write_text("ab" * 32 + "\n")
    key.chmod(mode)
    return home


def test_settings_follow_the_pnsd_table_and_add_pnsweb_users(tmp_path: Path) -> None:
    home = _home_with_key(tmp_path)
    config = tmp_path / "pnsd.toml"
    config.write_text(
        f'[pnsd]\nhome = "{home}"\nendpoint = "ipc://sockets/d.sock"\n'
        f'[pnsweb]\nport = 5055\nlog_level = "warning"\n[[pnsweb.users]]\nname = "carol"\n'
        f'password_hash = "{users()[1].password_hash}"\nadmin = true\n')
    settings = load_settings(config=config, env={"HOME": str(tmp_path)})
    assert settings.endpoint == f"ipc://{home}/sockets/d.sock" and settings.log_level == "warning"
    assert settings.key == b"ab" * 32
    assert settings.port == 5055 and settings.host == "127.0.0.1"
    assert settings.users[0].name == "carol" and settings.users[0].admin


def test_settings_default_to_pns_home(tmp_path: Path) -> None:
    home = _home_with_key(tmp_path)
    settings = load_settings(env={"HOME": str(tmp_path / "nobody"), "PNS_HOME": str(home)})
    assert settings.endpoint == f"ipc://{home}/run/pnsd.sock"
    assert settings.users == ()


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    home = _home_with_key(tmp_path, mode=0o644)
    with pytest.raises(SettingsError, match="readable by others"):
        load_settings(env={"HOME": str(tmp_path), "PNS_HOME": str(home)})


def test_curve_keys_for_a_tcp_daemon_are_read_relative_to_the_home(tmp_path: Path) -> None:
    import zmq.auth  # noqa: PLC0415 - only these tests make CURVE keys

    home = _home_with_key(tmp_path)
    for folder in ("curve", "keys"):
        (home / folder).mkdir()
    server_public, _ = zmq.auth.create_certificates(str(home / "curve"), "server")
    _, client_secret = zmq.auth.create_certificates(str(home / "keys"), "web")
    config = tmp_path / "c.toml"
    config.write_text(f'[pnsd]\nhome = "{home}"\n[pnsweb]\nendpoint = "tcp://10.0.0.5:7755"\n'
                      'server_key = "curve/server.key"\nclient_key = "keys/web.key_secret"\n')
    settings = load_settings(config=config, env={"HOME": str(tmp_path)})
    assert settings.curve is not None
    assert settings.curve[0] == zmq.auth.load_certificate(server_public)[0]
    assert settings.curve[1:] == zmq.auth.load_certificate(client_secret)
    assert "curve" not in repr(settings)
    config.write_text(f'[pnsd]\nhome = "{home}"\n[pnsweb]\nserver_key = "curve/server.key"\n')
    with pytest.raises(SettingsError, match="server_key and client_key go together"):
        load_settings(config=config, env={"HOME": str(tmp_path)})


@pytest.mark.parametrize(("text", "match"), [
    ("[pnsweb]\ncolour = 1\n", "unknown"),
    ("[pnsweb]\nport = \"80\"\n", "wrong type"),
    ("[pnsweb]\nlog_level = \"loud\"\n", "log_level must be one of"),
    ("[[pnsweb.users]]\nname = \"x\"\npassword_hash = \"plain\"\n", "scrypt"),
    ("[pnsweb\n", "cannot read"),
])
def test_bad_config_files_are_refused_clearly(tmp_path: Path, text: str, match: str) -> None:
    home = _home_with_key(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=match):
        load_settings(config=config, env={"HOME": str(tmp_path), "PNS_HOME": str(home)})


def test_an_explicit_config_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(env={"PNS_CONFIG": str(tmp_path / "none.toml")})


def test_command_line_user_becomes_an_admin_with_only_a_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home_with_key(tmp_path)
    monkeypatch.setenv("PNS_HOME", str(home))
    monkeypatch.delenv("PNS_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    args = cli.build_parser().parse_args(["-u", "root", "-p", "pw", "-i", "0.0.0.0", "-o", "8"])
    settings = cli.settings_of(args)
    assert (settings.host, settings.port) == ("0.0.0.0", 8)
    (user,) = settings.users
    assert user.name == "root" and user.admin and user.check("pw")
    assert "pw" not in repr(settings).replace("password_hash", "")
    with pytest.raises(SettingsError, match="together"):
        cli.settings_of(cli.build_parser().parse_args(["-u", "root"]))


def test_workers_come_from_the_config_and_the_command_line_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home_with_key(tmp_path)
    config = tmp_path / "pns.toml"
    config.write_text("[pnsweb]\nworkers = 3\n")
    monkeypatch.setenv("PNS_HOME", str(home))
    monkeypatch.setenv("HOME", str(tmp_path))
    parse = cli.build_parser().parse_args
    assert cli.settings_of(parse(["--config", str(config)])).workers == 3
    assert cli.settings_of(parse(["--config", str(config), "--workers", "1"])).workers == 1
    with pytest.raises(SettingsError, match="--workers -1"):
        cli.settings_of(parse(["--workers", "-1"]))
    config.write_text('[pnsweb]\nworkers = "two"\n')
    with pytest.raises(SettingsError, match="'workers' has the wrong type"):
        load_settings(config=config)


async def test_tests_run_on_uvloop_as_pnsweb_serves() -> None:
    """pnsweb.cli serves on uvloop; these tests must exercise the app on that loop."""
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
