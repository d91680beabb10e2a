"""The console in a real browser: headless Chromium (the distribution's package) driven by
Playwright, in front of a real pnsweb and pnsd.

Each test signs in, works the page as an operator would and checks what the page shows; the
screenshots of the main views go to ``tests/artifacts/console/``. Waits are Playwright's: each
assertion waits for the page to reach the state, up to its timeout.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.console_web import ADMIN, USER, ConsoleNode, start_console_node

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("PNS_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
ROOT = Path(__file__).resolve().parents[2]
WAIT = 30_000           # ms an expectation waits for the page
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a test dependency")
if shutil.which(CHROMIUM) is None:
    pytest.skip(f"no Chromium at {CHROMIUM} (make test installs the distribution's package)",
                allow_module_level=True)
expect = sync_api.expect

PLOT_SPEC = f"""[pts.plot]
mode = "inproc"
entry = "tests.integration.console_pts:plot"
pythonpath = [{str(ROOT)!r}]
version = "1"
selftest = {{input = {{}}, expect = {{size = 16}}}}
"""
BROKEN_SPEC = """[pts.broken]
mode = "inproc"
timeout = "soon"
entry = "pnsd.demo:echo"
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleNode]:
    running = start_console_node(tmp_path_factory.mktemp("console"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, node: ConsoleNode) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()
    assert problems == [], f"the page raised: {problems}"


def sign_in(page: Any, node: ConsoleNode, who: tuple[str, str] = ADMIN) -> None:
    page.goto(f"{node.url}/console")
    page.fill("#login input[name=user]", who[0])
    page.fill("#login input[name=password]", who[1])
    page.click("#login button[type=submit]")
    expect(page.locator("#who")).to_contain_text(who[0])


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def run_job(page: Any, pts: str, value: Any) -> str:
    """Start a job from the jobs page; the job page's id."""
    page.goto(page.url.split("#")[0] + "#/jobs")
    page.select_option("#run-pts", pts)
    page.fill("#run-input", json.dumps(value))
    page.click("#run button[type=submit]")
    page.wait_for_url("**/console/#/jobs/*")
    return str(page.url.rsplit("/", 1)[1])


def test_a_wrong_password_is_refused_on_the_page(page: Any, node: ConsoleNode) -> None:
    page.goto(f"{node.url}/console")
    page.fill("#login input[name=user]", ADMIN[0])
    page.fill("#login input[name=password]", "not it")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("wrong user name or password")
    shot(page, "login")


def test_the_admin_sees_the_node_and_the_demo_pts(page: Any, node: ConsoleNode) -> None:
    sign_in(page, node)
    expect(page.locator("tr[data-node=pnsd] .link")).to_contain_text("up")
    expect(page.locator("tr[data-node=pnsd] .uptime")).not_to_have_text("—")
    shot(page, "node")
    page.click("#nav a[data-view=pts]")
    for name in ("echo", "sleep", "hello", "hello-worker"):
        expect(page.locator(f"tr[data-pts='{name}']")).to_contain_text("ready")
    expect(page.locator("tr[data-pts='hello-worker']")).to_contain_text("alive")
    expect(page.locator("tr[data-pts='hello-worker'] .worker").first).to_contain_text(
        "Python 3.")
    expect(page.locator("tr[data-pts='hello-worker'] .worker").first).to_contain_text(
        " · local · ")    # where it runs: the daemon started it (a remote one names its host)
    shot(page, "pts")
    page.click("tr[data-pts=sleep] a")
    expect(page.locator("h1")).to_have_text("PTS sleep")
    expect(page.locator("main")).to_contain_text("seconds")      # its declared interface


def test_a_job_shows_its_progress_live_up_to_100(page: Any, node: ConsoleNode) -> None:
    sign_in(page, node)
    run_job(page, "sleep", {"seconds": 3})
    page.wait_for_selector("#job-percent")       # the job page has drawn itself
    page.evaluate("""() => {
        window.seen = [];
        const percent = document.getElementById('job-percent');
        new MutationObserver(() => window.seen.push(percent.textContent))
            .observe(percent, {childList: true, characterData: true, subtree: true});
    }""")
    expect(page.locator("#job-status")).to_have_text("successful")
    expect(page.locator("#job-percent")).to_have_text("100 %")
    seen = page.evaluate("window.seen")       # the same page all along: no reload
    between = [text for text in seen if text not in ("0 %", "100 %")]
    assert between, f"no progress between 0 and 100 was shown: {seen}"
    expect(page.locator("#job-message")).to_have_text("done")
    shot(page, "job")


def test_a_deployed_pts_s_image_output_is_shown(page: Any, node: ConsoleNode) -> None:
    sign_in(page, node)
    page.click("#nav a[data-view=steer]")
    page.fill("#steer-spec", PLOT_SPEC)
    page.click("#steer button[type=submit]")
    expect(page.locator("#steer-done")).to_contain_text("deploy plot: version 1")
    run_job(page, "plot", {})
    image = page.locator(".output[data-output=image] img")
    expect(image).to_be_visible()
    page.wait_for_function("document.querySelector('.output img').naturalWidth === 16")
    expect(page.locator(".output[data-output=blob] a")).to_have_text("Download")
    expect(page.locator("#log")).to_contain_text("drew a square")
    shot(page, "job-image")


def test_a_broken_spec_shows_its_error_next_to_its_cause(page: Any, node: ConsoleNode) -> None:
    sign_in(page, node)
    page.click("#nav a[data-view=steer]")
    page.fill("#steer-spec", BROKEN_SPEC)
    page.click("#steer button[type=submit]")
    error = page.locator("#error-spec")
    expect(error).to_contain_text("line 3")
    expect(error).to_contain_text("'timeout' must be a number")
    shot(page, "deploy-error")
    page.fill("#steer-spec", "[pts.x\nmode = 1")
    page.click("#steer button[type=submit]")
    expect(error).to_contain_text("not TOML")
    page.fill("#steer-spec", '[pts.echo]\nmode = "inproc"\nentry = "pnsd.demo:echo"\n')
    page.click("#steer button[type=submit]")
    expect(page.locator("#error-name")).to_contain_text("echo")    # the name is taken
    expect(error).to_have_text("")


def test_a_running_job_is_cancelled_from_its_page(page: Any, node: ConsoleNode) -> None:
    sign_in(page, node)
    run_job(page, "sleep", {"seconds": 60})
    expect(page.locator("#job-status")).to_have_text("running")
    page.click("#cancel")
    expect(page.locator("#job-status")).to_have_text("dismissed")
    expect(page.locator("#cancel")).to_be_disabled()


def test_the_plots_draw_the_runs_of_the_last_minutes(page: Any, node: ConsoleNode) -> None:
    sign_in(page, node)
    run_job(page, "echo", {"x": 1})
    expect(page.locator("#job-status")).to_have_text("successful")
    page.click("#nav a[data-view=plots]")
    expect(page.locator("#plot-throughput canvas")).to_be_visible()
    expect(page.locator("#plot-latency canvas")).to_be_visible()
    expect(page.locator("#plot-totals tr[data-pts=echo]")).to_be_visible()
    shot(page, "plots")


def test_a_plain_user_sees_only_their_jobs_and_no_admin_views(
        page: Any, node: ConsoleNode) -> None:
    sign_in(page, node, USER)
    expect(page.locator("#nav a")).to_have_count(1)
    mine = run_job(page, "echo", {"mine": True})
    expect(page.locator("#job-status")).to_have_text("successful")
    page.click("#nav a[data-view=jobs]")
    expect(page.locator(f"tr[data-job='{mine}']")).to_be_visible()
    owners = page.locator("#jobs tbody tr td:nth-child(5)").all_inner_texts()
    assert owners and set(owners) == {USER[0]}
    assert page.request.get(f"{node.url}/console/api/node").status == 403
    shot(page, "jobs-user")
