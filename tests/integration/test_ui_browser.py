"""The dashboard in headless Chromium (Debian's, driven by Playwright) against a real
``bgserve serve`` with the local backend and bearer tokens: sign in, stage, compare,
promote, revert, the timeline; a viewer sees no button; forged posts change nothing.

``BGSERVE_UI_SCREENSHOTS=DIR`` also saves the list and the deployment page as PNGs.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import WAIT_MS, chromium
from tests.support.flow import RELEASES, infer_body, ok, register_demo
from tests.support.processes import start_serve, wait_gone

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

DEPLOYER, VIEWER = "deployer-token-ui", "viewer-token-ui"

# The dev extra installs Playwright; without it chromium() says what is missing.
with contextlib.suppress(ImportError):
    from playwright.sync_api import Browser, Dialog, Page, expect


class Stack:
    """A running bgserve with releases v1, v2 and reworded and deployment ``chat``."""

    def __init__(self, url: str, ids: dict[str, int]) -> None:
        self.url = url
        self.ids = ids

    def api(self, token: str = DEPLOYER) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {token}"}, timeout=120
        )

    def deployment(self) -> dict[str, Any]:
        with self.api(VIEWER) as http:
            body: dict[str, Any] = ok(http.get("/deployments/chat"))
            return body

    def history(self) -> list[dict[str, Any]]:
        with self.api(VIEWER) as http:
            events: list[dict[str, Any]] = ok(http.get("/deployments/chat/history"))
            return events


def start_plan(http: httpx.Client, green: int) -> None:
    """On ``search``: green staged and compared, and a plan whose analysis waits for far
    more requests than come, so it stays on its first step with inconclusive numbers."""
    ok(http.post("/deployments/search/green", json={"release_id": green}))
    report = ok(http.post("/deployments/search/compare", json={"golden_set": "summarize"}))
    assert report["verdict"]["passed"], report["verdict"]
    plan = {"steps": [10, 50, 100], "bake_s": 1, "analysis": {"min_requests": 100_000}}
    ok(http.post("/deployments/search/promote", json={"plan": plan}), 202)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[Stack]:
    register_demo(mlflow_store)
    env = {
        "BGSERVE_AUTH_TOKENS": f"deployer:{DEPLOYER},viewer:{VIEWER}",
        # a loaded test machine: only a gross slowdown fails the latency checks
        "BGSERVE_COMPARE_THRESHOLDS": '{"max_latency_ratio_p50": 10, "max_latency_ratio_p95": 10}',
    }
    url, proc = start_serve(tmp_path_factory.mktemp("ui"), mlflow_store, env)
    try:
        stack = Stack(url, {})
        with stack.api() as http:
            for key, (name, model, prompt) in RELEASES.items():
                body = {"name": name, "model_uri": model, "prompt_uri": prompt}
                stack.ids[key] = ok(http.post("/releases", json=body), 201)["id"]
            for name in ("chat", "search"):
                created = {"name": name, "release_id": stack.ids["v1"]}
                ok(http.post("/deployments", json=created), 201)
            start_plan(http, stack.ids["reworded"])
        yield stack
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        wait_gone([proc.pid])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def signed_in(browser: Browser, stack: Stack, token: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)  # starting a slot takes seconds on a loaded machine
    page.goto(f"{stack.url}/ui")
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui$"))
    return page


def shoot(page: Page, name: str) -> None:
    folder = os.environ.get("BGSERVE_UI_SCREENSHOTS")
    if folder:
        page.evaluate("document.getElementById('status').textContent = ''")
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def test_a_deployer_stages_compares_promotes_and_reverts_without_reloading(
    browser: Browser, stack: Stack
) -> None:
    page = signed_in(browser, stack, DEPLOYER)
    expect(page.get_by_role("link", name="chat")).to_be_visible()
    page.get_by_role("link", name="chat").click()
    expect(page.get_by_role("heading", name="chat", exact=True)).to_be_visible()
    page.evaluate("window.__sameDocument = true")
    live = page.locator("#live")

    page.get_by_label("Stage release").select_option(str(stack.ids["v2"]))
    page.get_by_role("button", name="Stage green").click()
    expect(live.locator(".summary")).to_contain_text("staged")

    page.get_by_label("Golden set").fill("summarize")
    page.get_by_role("button", name="Run comparison").click()
    rows = live.locator("table.diff tbody tr")
    expect(rows.first).to_have_class("failing")  # v2 fails the gate: its failing cases first
    expect(rows.first.locator("del, ins").first).to_be_visible()  # the words that differ

    confirmed: list[str] = []

    def accept(dialog: Dialog) -> None:
        confirmed.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.get_by_label("Green weight").fill("30")
    page.locator("#step-force").check()
    page.get_by_role("button", name="Promote one step").click()
    expect(live.locator(".summary")).to_contain_text("green 30%")
    assert confirmed and "Force" in confirmed[0]
    assert stack.deployment()["green"]["weight"] == 30

    with stack.api() as http:  # a change made elsewhere shows up by itself
        ok(http.post("/deployments/chat/promote", json={"weight": 40, "force": True}))
    expect(live.locator(".summary")).to_contain_text("green 40%")
    url = stack.deployment()["data_plane_url"]
    with httpx.Client(timeout=30) as client:
        for i in range(20):
            ok(client.post(url, json=infer_body(f"Request {i}. It has two sentences.")))
    counts = live.locator("table", has_text="error rate").locator("tbody tr")
    expect(counts.filter(has_text="blue").locator("td").nth(2)).not_to_have_text("0")
    shoot(page, "ui-deployment.png")
    listing = browser_page(page)
    expect(listing.locator("#live")).to_contain_text("step 1 of 3")
    shoot(listing, "ui-list.png")
    listing.close()

    page.get_by_role("button", name="Revert").click()
    expect(live.locator(".summary")).to_contain_text("reverted")
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"
    assert stack.deployment()["green"]["weight"] == 0

    timeline = live.locator("table.timeline tbody tr")
    expect(timeline).to_have_count(4)  # v1 alone, 70/30, 60/40, v1 alone again
    expect(timeline.first).to_contain_text("revert")
    timeline.nth(1).get_by_role("link").click()  # "what was live then": the 60/40 span
    expect(page).to_have_url(re.compile(r"\?at="))
    expect(page.locator(".answer")).to_contain_text("60%")
    expect(page.locator(".answer")).to_contain_text("40%")
    page.context.close()


def browser_page(beside: Page) -> Page:
    """The deployment list in a new tab of the same (signed-in) browser context."""
    listing = beside.context.new_page()
    listing.set_viewport_size({"width": 1280, "height": 700})
    listing.goto(beside.url.split("/ui/")[0] + "/ui")
    return listing


def test_the_running_plan_shows_each_checks_numbers(browser: Browser, stack: Stack) -> None:
    page = signed_in(browser, stack, VIEWER)
    expect(page.locator("#live")).to_contain_text("step 1 of 3")
    page.goto(f"{stack.url}/ui/d/search")
    plan = page.locator("section", has=page.get_by_role("heading", name="Plan"))
    expect(plan).to_contain_text("inconclusive")  # after the first 1 s bake
    check = plan.locator("tr", has_text="error_rate").first
    expect(check).to_contain_text("blue_requests")
    expect(check).to_contain_text("100000")
    page.context.close()


def test_a_viewer_sees_everything_but_no_button(browser: Browser, stack: Stack) -> None:
    page = signed_in(browser, stack, VIEWER)
    page.goto(f"{stack.url}/ui/d/chat")
    expect(page.locator("#live")).to_contain_text("Release timeline")
    expect(page.locator("main button")).to_have_count(0)
    expect(page.locator("main form")).to_have_count(0)
    page.keyboard.press("Tab")  # the keyboard's first stop skips the header
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than it
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.context.close()


ATTACK = """<!DOCTYPE html><html><body>
<form id="f" method="post" enctype="text/plain" action="{target}">
<input name='{{"weight": 100, "force": true, "x": "' value='"}}'></form>
<script>
fetch("{target}", {{method: "POST", credentials: "include", mode: "no-cors",
  headers: {{"content-type": "text/plain"}}, body: '{{"weight": 100, "force": true}}'}})
  .finally(() => document.getElementById("f").submit());
</script></body></html>"""


@pytest.fixture
def attacker(stack: Stack) -> Iterator[str]:
    """A page on another site that posts to the dashboard as soon as it loads."""
    page = ATTACK.format(target=f"{stack.url}/ui/d/chat/promote").encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://localhost:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_forged_posts_change_nothing(browser: Browser, stack: Stack, attacker: str) -> None:
    before = stack.deployment()
    events = len(stack.history())
    page = signed_in(browser, stack, DEPLOYER)  # the victim is signed in
    page.goto(attacker)
    page.wait_for_load_state("networkidle")
    assert stack.deployment()["version"] == before["version"]
    assert len(stack.history()) == events
    page.context.close()
    for headers in ({}, {"x-bgserve-csrf": "0" * 64}):
        response = httpx.post(f"{stack.url}/ui/d/chat/revert", json={}, headers=headers, timeout=30)
        assert response.status_code == 401, response.text
    assert stack.deployment()["version"] == before["version"]
