"""The console's API end to end (the real app in front of a real ``pnsd``): sessions, the
same-origin rule, who sees what, the event stream's resumption, outputs, steering, plots."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, CookieJar

from pnsweb.app import create_app
from pnsweb.settings import User, hash_password, load_settings
from tests.integration.conftest import DaemonProcess, pnsweb_client
from tests.waiting import until

pytestmark = pytest.mark.slow
ADMIN = ("ada", "ada-pw")
USER = ("bob", "bob-pw")
OTHER = ("eve", "eve-pw")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def web(aiohttp_client: Any, pnsd: DaemonProcess) -> AsyncIterator[Any]:
    env = {"HOME": str(pnsd.home), "PNS_HOME": str(pnsd.home)}
    settings = load_settings(config=pnsd.config, env=env)
    users = (User(ADMIN[0], hash_password(ADMIN[1]), admin=True),
             User(USER[0], hash_password(USER[1])), User(OTHER[0], hash_password(OTHER[1])))
    settings = dataclasses.replace(settings, users=users)
    async with pnsweb_client(settings) as client:
        yield await aiohttp_client(create_app(settings, client=client))


def origin(web: Any) -> dict[str, str]:
    return {"Origin": str(web.make_url("")).rstrip("/")}


async def session(web: Any, who: tuple[str, str]) -> Any:
    """A client of its own (its own cookie jar) signed in as ``who``."""
    # unsafe: the test server is an IP address, whose cookies aiohttp's jar refuses otherwise
    jar = ClientSession(base_url=str(web.make_url("")), headers=origin(web),
                        cookie_jar=CookieJar(unsafe=True))
    reply = await jar.post("/console/api/login", json={"user": who[0], "password": who[1]})
    assert reply.status == 200, await reply.text()
    return jar


@pytest.fixture
async def admin(web: Any) -> AsyncIterator[Any]:
    jar = await session(web, ADMIN)
    yield jar
    await jar.close()


@pytest.fixture
async def bob(web: Any) -> AsyncIterator[Any]:
    jar = await session(web, USER)
    yield jar
    await jar.close()


async def finished(jar: Any, job_id: str) -> dict[str, Any]:
    record: dict[str, Any] = {}

    async def done() -> bool:
        record.update((await (await jar.get(f"/console/api/jobs/{job_id}")).json())["job"])
        return record["status"] in ("successful", "failed", "dismissed")

    await until(done, timeout=30, every=0.05)
    return record


async def submit(jar: Any, pts: str, value: Any) -> str:
    reply = await jar.post("/console/api/jobs", json={"pts": pts, "input": value})
    assert reply.status == 201, await reply.text()
    return str((await reply.json())["job"]["id"])


async def test_sign_in_sets_a_guarded_cookie_and_sends_no_secret(web: Any) -> None:
    reply = await web.post("/console/api/login", headers=origin(web),
                           json={"user": ADMIN[0], "password": ADMIN[1]})
    assert reply.status == 200
    cookie = reply.headers["Set-Cookie"]
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/console"):
        assert flag in cookie
    body = await reply.text()
    assert json.loads(body) == {"user": ADMIN[0], "admin": True}
    assert "scrypt" not in body and ADMIN[1] not in body


async def test_a_wrong_password_is_401_without_a_browser_prompt(web: Any) -> None:
    reply = await web.post("/console/api/login", headers=origin(web),
                           json={"user": ADMIN[0], "password": "nope"})
    assert reply.status == 401
    assert "WWW-Authenticate" not in reply.headers
    assert (await web.get("/console/api/me")).status == 401


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"}, {}])
async def test_a_write_from_another_site_is_refused_even_signed_in(
        web: Any, admin: Any, headers: dict[str, str]) -> None:
    before = (await (await admin.get("/console/api/jobs")).json())["total"]
    async with ClientSession(base_url=str(web.make_url("")),
                             cookie_jar=admin.cookie_jar) as attacker:
        reply = await attacker.post("/console/api/jobs", headers=headers,
                                    json={"pts": "echo", "input": {}})
        assert reply.status == 403, await reply.text()
        login = await attacker.post("/console/api/login", headers=headers,
                                    json={"user": ADMIN[0], "password": ADMIN[1]})
        assert login.status == 403
    assert (await (await admin.get("/console/api/jobs")).json())["total"] == before


async def test_signing_out_ends_the_session(web: Any) -> None:
    jar = await session(web, USER)
    try:
        assert (await jar.get("/console/api/me")).status == 200
        cookie = jar.cookie_jar.filter_cookies(web.make_url("/console/"))["pns_console"].value
        assert (await jar.post("/console/api/logout")).status == 200
        reply = await web.get("/console/api/me", cookies={"pns_console": cookie})
        assert reply.status == 401
    finally:
        await jar.close()


async def test_a_plain_user_gets_only_their_jobs_and_no_admin_view(
        web: Any, admin: Any, bob: Any) -> None:
    theirs = await submit(admin, "echo", {"a": 1})
    mine = await submit(bob, "echo", {"b": 2})
    listed = (await (await bob.get("/console/api/jobs?owner=ada")).json())["jobs"]
    assert mine in {j["id"] for j in listed}        # ?owner= is the administrators' filter
    assert {j["owner"] for j in listed} == {USER[0]}
    for path in (f"/console/api/jobs/{theirs}", f"/console/api/jobs/{theirs}/outputs",
                 f"/console/api/jobs/{theirs}/events"):
        assert (await bob.get(path)).status == 404
    assert (await bob.post(f"/console/api/jobs/{theirs}/cancel")).status == 404
    for path in ("/console/api/node", "/console/api/pts", "/console/api/pts/echo",
                 "/console/api/stats"):
        assert (await bob.get(path)).status == 403
    deploy = await bob.post("/console/api/pts", json={"text": "[pts.x]\nmode='inproc'"})
    assert deploy.status == 403
    assert (await admin.get(f"/console/api/jobs/{mine}")).status == 200
    shown = await (await admin.get("/console/api/jobs?owner=bob")).json()
    assert {j["owner"] for j in shown["jobs"]} == {USER[0]}


async def test_the_event_stream_resumes_after_the_last_event_id(admin: Any) -> None:
    job_id = await submit(admin, "sleep", {"seconds": 0.5})
    await finished(admin, job_id)
    whole = await (await admin.get(f"/console/api/jobs/{job_id}/events")).text()
    ids = [int(line[4:]) for line in whole.splitlines() if line.startswith("id: ")]
    assert len(ids) >= 4 and ids == sorted(ids)
    rest = await (await admin.get(f"/console/api/jobs/{job_id}/events",
                                  headers={"Last-Event-ID": str(ids[1])})).text()
    resumed = [int(line[4:]) for line in rest.splitlines() if line.startswith("id: ")]
    assert resumed == ids[2:]
    assert '"status": "successful"' in rest.split("\n\n")[-2]


async def test_a_job_shows_its_input_and_its_binary_outputs(admin: Any) -> None:
    spec = (f'[pts.plot]\nmode = "inproc"\nentry = "tests.integration.console_pts:plot"\n'
            f'pythonpath = [{str(ROOT)!r}]\n')
    reply = await admin.post("/console/api/pts", json={"text": spec})
    assert reply.status == 200, await reply.text()
    job_id = await submit(admin, "plot", {"colour": "blue"})
    await finished(admin, job_id)
    page = await (await admin.get(f"/console/api/jobs/{job_id}")).json()
    assert page["input"] == {"colour": "blue"}
    outputs = await (await admin.get(f"/console/api/jobs/{job_id}/outputs")).json()
    assert outputs["result"]["size"] == 16 and outputs["result"]["image"] == {"binary": 136}
    kinds = {o["name"]: o["type"] for o in outputs["outputs"]}
    assert kinds == {"image": "image/png", "blob": "application/octet-stream"}
    image = await admin.get(f"/console/api/jobs/{job_id}/outputs/0")
    assert image.content_type == "image/png"
    assert (await image.read()).startswith(b"\x89PNG")
    assert image.headers["Content-Disposition"].startswith("inline")
    download = await admin.get(f"/console/api/jobs/{job_id}/outputs/1")
    assert download.headers["Content-Disposition"].startswith("attachment")
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert (await admin.get(f"/console/api/jobs/{job_id}/outputs/2")).status == 404


async def test_spec_errors_name_their_field_and_line(admin: Any) -> None:
    cases = [
        ({"text": "[pts.b]\nmode = 'inproc'\ntimeout = 'soon'\nentry = 'pnsd.demo:echo'\n"},
         400, "spec", 3),
        ({"text": '{\n  "mode": "inproc",\n  "entry": 7\n}', "format": "json", "name": "j"},
         400, "spec", 3),
        ({"text": "{\n  \"mode\": \n}", "format": "json", "name": "j"}, 400, "spec", 3),
        ({"text": "[pts.echo]\nmode = 'inproc'\nentry = 'pnsd.demo:echo'\n"}, 409, "name", None),
        ({"text": "[pts.b]\nmode = 'inproc'\nentry = 'pnsd.demo:fail'\n"
                  "selftest = {input = 1}\n"}, 400, "spec", 4),
        ({"text": "mode = 'inproc'"}, 400, "name", None),
    ]
    for body, status, field, line in cases:
        reply = await admin.post("/console/api/pts", json=body)
        problem = await reply.json()
        assert reply.status == status, problem
        assert [(e["field"], e["line"]) for e in problem["errors"]] == [(field, line)], problem
    assert (await admin.get("/console/api/pts/b")).status == 404     # nothing was deployed


async def test_env_values_never_reach_the_page(admin: Any) -> None:
    spec = ("[pts.secretive]\nmode = 'inproc'\nentry = 'pnsd.demo:echo'\n"
            "env = {TOKEN = 's3cret-value'}\n")
    assert (await admin.post("/console/api/pts", json={"text": spec})).status == 200
    body = await (await admin.get("/console/api/pts/secretive")).text()
    assert "s3cret-value" not in body and "TOKEN" in body
    assert (await admin.delete("/console/api/pts/secretive")).status == 200
    assert (await admin.get("/console/api/pts/secretive")).status == 404


async def test_node_and_plots_show_the_daemon_and_its_runs(admin: Any) -> None:
    job_id = await submit(admin, "echo", {"x": 1})
    await finished(admin, job_id)
    node = (await (await admin.get("/console/api/node")).json())["nodes"][0]
    assert node["link"]["up"] and node["daemon"]["uptime"] > 0
    assert node["store"]["bound"] > 0 and node["store"]["bytes"] >= 0
    stats = await (await admin.get("/console/api/stats?span=60")).json()
    assert stats["span"] == 60 and len(stats["times"]) == 12
    assert stats["pts"]["echo"]["total"]["ok"] >= 1
    assert (await admin.get("/console/api/stats?span=1")).status == 400
    pts = {p["name"]: p for p in (await (await admin.get("/console/api/pts")).json())["pts"]}
    assert pts["hello-worker"]["workers"] >= 1 and pts["hello-worker"]["pids"]
    each = pts["hello-worker"]["each"]
    assert [w["pid"] for w in each] == pts["hello-worker"]["pids"]
    assert all(w["python"].startswith("3.") and w["since"] > 0 for w in each)


async def test_the_page_and_its_files_are_served_with_a_strict_policy(web: Any) -> None:
    bare = await web.get("/console", allow_redirects=False)
    assert bare.status == 302 and bare.headers["Location"] == "/console/"
    page = await web.get("/console/")
    assert page.status == 200 and "PNS console" in await page.text()
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    for path in ("app.js", "vendor/uPlot.iife.min.js", "vendor/uPlot.LICENSE"):
        assert (await web.get(f"/console/static/{path}")).status == 200
    assert (await web.get("/console/static/../routes.py")).status == 404


async def test_the_job_list_filters_by_creation_time(admin: Any) -> None:
    job_id = await submit(admin, "echo", {"t": 1})
    created = (await (await admin.get(f"/console/api/jobs/{job_id}")).json())["job"]["created"]

    async def listed(query: str) -> set[str]:
        reply = await admin.get(f"/console/api/jobs?{query}")
        assert reply.status == 200, await reply.text()
        return {j["id"] for j in (await reply.json())["jobs"]}

    assert job_id in await listed(f"since={created}&until={created}")
    assert job_id in await listed("since=0")
    assert await listed(f"since={created + 3600}") == set()      # the daemon applied it
    assert job_id not in await listed(f"until={created - 3600}")
    for bad in ("since=yesterday", "since=-5", "until=nan", "until=inf"):
        reply = await admin.get(f"/console/api/jobs?{bad}")
        assert reply.status == 400, bad
        assert reply.content_type.endswith("json"), bad
        assert "epoch seconds" in json.dumps(await reply.json())
