"""A real ``bgserve serve`` in no-token mode (the loopback default) against web pages: a page
on another origin auto-submits a form to revert, a DNS-rebinding page reads and drives the
API under its own name; both are refused, while the dashboard's own actions, curl-style
JSON calls and the probes keep working. Chromium is real (Debian's, driven by Playwright).
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.browser import WAIT_MS, chromium
from tests.support.flow import RELEASES, ok, register_demo
from tests.support.processes import start_serve

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

# The dev extra installs Playwright; without it chromium() says what is missing.
with contextlib.suppress(ImportError):
    from playwright.sync_api import Browser, expect


class Served:
    def __init__(self, url: str) -> None:
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])

    def deployment(self) -> dict[str, Any]:
        body: dict[str, Any] = ok(httpx.get(f"{self.url}/deployments/chat", timeout=30))
        return body


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[Served]:
    register_demo(mlflow_store)
    env = {"BGSERVE_BACKEND": "memory", "BGSERVE_CONTROL_ALLOWED_HOSTS": '["bgserve.proxy"]'}
    url, proc = start_serve(tmp_path_factory.mktemp("origin"), mlflow_store, env)
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            ids = {}
            for key in ("v1", "reworded"):
                name, model, prompt = RELEASES[key]
                body = {"name": name, "model_uri": model, "prompt_uri": prompt}
                ids[key] = ok(http.post("/releases", json=body), 201)["id"]
            ok(http.post("/deployments", json={"name": "chat", "release_id": ids["v1"]}), 201)
            ok(http.post("/deployments/chat/green", json={"release_id": ids["reworded"]}))
            shift = {"weight": 50, "force": True}
            ok(http.post("/deployments/chat/promote", json=shift))
        yield Served(url)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # rebind.test resolves to this machine, as a DNS-rebinding attacker's name would.
    with chromium("--host-resolver-rules=MAP rebind.test 127.0.0.1") as launched:
        yield launched


def attacker_page(target: str) -> Iterator[str]:
    page = (
        f"<html><body><form id='f' method='POST' action='{target}/deployments/chat/revert'>"
        "<input name='x' value='1'></form><script>document.getElementById('f').submit()"
        "</script></body></html>"
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_cross_site_form_cannot_revert(browser: Browser, served: Served) -> None:
    before = served.deployment()
    page = browser.new_page()
    for url in attacker_page(served.url):
        page.goto(url)
        page.wait_for_load_state("networkidle")
        assert "CrossOrigin" in page.content()
    page.close()
    after = served.deployment()
    assert after["version"] == before["version"]
    assert after["green"]["weight"] == 50


def test_a_rebinding_page_can_neither_read_nor_drive_the_api(
    browser: Browser, served: Served
) -> None:
    page = browser.new_page()
    page.goto(f"http://rebind.test:{served.port}/deployments")
    assert "ForeignHost" in page.content() and "BGSERVE_CONTROL_ALLOWED_HOSTS" in page.content()
    status = page.evaluate(
        """async () => (await fetch('/deployments/chat/revert', {method: 'POST',
        headers: {'content-type': 'application/json'}, body: '{}'})).status"""
    )
    assert status == 403
    page.close()
    assert served.deployment()["green"]["weight"] == 50


def test_the_dashboard_still_acts_from_its_own_origin(browser: Browser, served: Served) -> None:
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{served.url}/ui/d/chat")
    page.locator("form[data-action$='/revert'] button").click()
    expect(page.locator("#status")).to_contain_text("reverted", timeout=WAIT_MS)
    page.close()
    assert served.deployment()["green"] is None or served.deployment()["green"]["weight"] == 0
    restore = {"weight": 50, "force": True}
    ok(httpx.post(f"{served.url}/deployments/chat/promote", json=restore, timeout=60))


@pytest.mark.parametrize(
    ("headers", "status", "rule"),
    [
        ({"host": "evil.example:8080"}, 403, "ForeignHost"),
        ({"origin": "http://localhost:3000"}, 403, "CrossOrigin"),
        ({"origin": "null"}, 403, "CrossOrigin"),
        ({"sec-fetch-site": "cross-site"}, 403, "CrossOrigin"),
        ({"content-type": "application/x-www-form-urlencoded"}, 415, "NotJson"),
        ({"content-type": "text/plain"}, 415, "NotJson"),
        ({"content-type": "multipart/form-data; boundary=x"}, 415, "NotJson"),
    ],
)
def test_foreign_hosts_origins_and_form_bodies_are_refused(
    served: Served, headers: dict[str, str], status: int, rule: str
) -> None:
    before = served.deployment()["version"]
    response = httpx.post(
        f"{served.url}/deployments/chat/revert", content=b"x=1", headers=headers, timeout=30
    )
    assert response.status_code == status, response.text
    assert response.json()["error"] == rule
    assert served.deployment()["version"] == before


def test_local_names_json_calls_allowed_hosts_and_probes_are_answered(served: Served) -> None:
    for host in ("localhost", f"localhost:{served.port}", f"127.0.0.1:{served.port}", "[::1]:1"):
        answer = httpx.get(f"{served.url}/deployments", headers={"host": host}, timeout=30)
        assert answer.status_code == 200, host
    proxied = {"host": "bgserve.proxy", "origin": "https://bgserve.proxy"}
    assert httpx.get(f"{served.url}/deployments", headers=proxied, timeout=30).status_code == 200
    assert httpx.get(f"{served.url}/healthz", headers={"host": "x.example"}).status_code == 200
    same = {"origin": served.url, "sec-fetch-site": "same-origin"}
    for extra in ({}, same, proxied):
        shifted = httpx.post(
            f"{served.url}/deployments/chat/promote",
            json={"weight": 50, "force": True},
            headers=extra,
            timeout=60,
        )
        assert shifted.status_code == 200, shifted.text


def test_the_rule_is_off_with_tokens(tmp_path: Path, mlflow_store: str) -> None:
    env = {"BGSERVE_BACKEND": "memory", "BGSERVE_AUTH_TOKENS": "viewer:v-token"}
    url, proc = start_serve(tmp_path, mlflow_store, env)
    try:
        headers = {"host": "bgserve.example.com", "authorization": "Bearer v-token"}
        assert httpx.get(f"{url}/deployments", headers=headers, timeout=30).status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
