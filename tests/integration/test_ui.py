"""The dashboard's pages, sign-in and actions on a real bgserve (in-process API, real
slots, real MLflow), and its timeline from history events.

The browser tests (``test_ui_browser.py``) drive the same pages in Chromium; these check
what a browser cannot show: escaping, headers, the refusals, and the data plane's reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bgserve.api.app import create_app
from bgserve.ui.assets import VERSION
from bgserve.ui.snapshot import TrafficCache
from tests.support.flow import Answer, create_releases, deploy, infer_body, make_settings, ok, poll

ADMIN, DEPLOYER, VIEWER = "admin-tok", "deployer-tok", "viewer-tok"
pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOSTILE_ID = "<img src=x onerror=alert(1)>"
HOSTILE_TEXT = "<script>alert('x')</script> Hello there. Second sentence."


# --- a bgserve without tokens: everyone is an admin on loopback ---------------------------


def csrf_of(page: str) -> str:
    found = re.search(r"name='bgserve-csrf' content='([0-9a-f]{64})'", page)
    assert found, "no CSRF token in the page"
    return found.group(1)


@pytest.fixture(scope="module")
def chat(client: TestClient, rel: dict[str, int]) -> str:
    """Deployment ``chat``: blue v1, green v2 staged; its data-plane URL."""
    return deploy(client, "chat", rel["v1"], rel["v2"])


def test_pages_escape_model_outputs_and_case_ids(client: TestClient, chat: str) -> None:
    cases = [{"id": HOSTILE_ID, "inputs": {"text": HOSTILE_TEXT}}]
    ok(client.post("/deployments/chat/compare", json={"cases": cases}))
    page = client.get("/ui/d/chat")
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert scripts == [f"<script src='/ui/static/ui.js?v={VERSION}' defer>"]


def test_the_list_shows_each_deployment_and_its_weights(client: TestClient, chat: str) -> None:
    page = client.get("/ui")
    assert page.status_code == 200
    assert "/ui/d/chat" in page.text and "blue 100%" in page.text
    ok(client.post("/deployments/chat/promote", json={"weight": 20, "force": True}))
    live = client.get("/ui/live")
    assert "blue 80%, green 20%" in live.text and "<html" not in live.text
    ok(client.post("/deployments/chat/revert", json={}))
    assert "blue 100%" in client.get("/ui/live").text


def test_actions_need_the_csrf_header_and_then_act(client: TestClient, chat: str) -> None:
    version = ok(client.get("/deployments/chat"))["version"]
    refused = client.post("/ui/d/chat/promote", json={"weight": 10, "force": True})
    assert refused.status_code == 403 and "x-bgserve-csrf" in refused.json()["message"]
    assert ok(client.get("/deployments/chat"))["version"] == version
    headers = {"x-bgserve-csrf": csrf_of(client.get("/ui/d/chat").text)}
    done = client.post("/ui/d/chat/promote", json={"weight": 10, "force": True}, headers=headers)
    assert done.status_code == 200 and "green at 10%" in done.json()["message"]
    bad = client.post("/ui/d/chat/promote", json={"weight": 101}, headers=headers)
    assert bad.status_code == 422 and "weight" in bad.text
    reverted = client.post("/ui/d/chat/revert", json={}, headers=headers)
    assert (
        reverted.status_code == 200 and ok(client.get("/deployments/chat"))["green"]["weight"] == 0
    )


def test_at_answers_what_was_live_and_refuses_a_bad_time(client: TestClient, chat: str) -> None:
    before = client.get("/ui/d/chat", params={"at": "2001-01-01T00:00:00Z"})
    assert before.status_code == 200 and "did not exist yet" in before.text
    now = client.get("/ui/d/chat", params={"at": datetime.now(UTC).isoformat()})
    assert "live was" in now.text and "aria-current='true'" in now.text
    bad = client.get("/ui/d/chat/live", params={"at": "yesterday"})
    assert bad.status_code == 422 and bad.json()["field"] == "at"
    assert "ISO 8601" in bad.json()["message"]


def test_the_shadow_comparison_shows_blue_and_green_side_by_side(
    client: TestClient, chat: str
) -> None:
    ok(client.put("/deployments/chat/shadow", json={"percent": 100}))
    try:
        with httpx.Client(timeout=10) as http:
            for i in range(8):
                ok(http.post(chat, json=infer_body(f"Sentence {i}, long enough to cut. More.")))

        def shown() -> str | None:
            live = client.get("/ui/d/chat/live").text
            section = live.split("Shadow comparison", 1)[1]
            return section if "table class='diff'" in section else None

        section = poll(shown, 30, "the shadow pairs on the page")
        assert "mirroring 100%" in section and "<th scope='col'>green</th>" in section
    finally:
        ok(client.delete("/deployments/chat/shadow"))


def test_pages_read_the_data_planes_counters_at_most_once_a_second(
    client: TestClient, chat: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend: Any = client.app.state.components.service.backend  # type: ignore[attr-defined]
    calls: list[int] = []
    real = backend.traffic_reading

    def counted() -> Any:
        calls.append(1)
        return real()

    monkeypatch.setattr(backend, "traffic_reading", counted)
    monkeypatch.setattr(client.app.state, "ui_traffic", TrafficCache())  # type: ignore[attr-defined]
    started = datetime.now(UTC)
    for _ in range(10):
        assert client.get("/ui/d/chat/live").status_code == 200
    elapsed = (datetime.now(UTC) - started).total_seconds()
    assert 1 <= len(calls) <= int(elapsed) + 1


def test_the_plan_starts_from_the_dashboard(client: TestClient, chat: str) -> None:
    headers = {"x-bgserve-csrf": csrf_of(client.get("/ui/d/chat").text)}
    started = client.post("/ui/d/chat/promote", json={"force": True}, headers=headers)
    assert started.status_code == 202 and "plan started" in started.json()["message"]
    ok(client.post("/deployments/chat/revert", json={}))
    assert "No plan under way" in client.get("/ui/d/chat/live").text


# --- a bgserve with tokens: sign-in, roles, and nothing without them ----------------------


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("ui-auth"), mlflow_store)
    tokens = f"admin:{ADMIN},deployer:{DEPLOYER},viewer:{VIEWER}"
    with TestClient(create_app(settings.model_copy(update={"auth_tokens": tokens}))) as app:
        app.headers["authorization"] = f"Bearer {ADMIN}"
        ids = create_releases(app)
        ok(app.post("/deployments", json={"name": "chat", "release_id": ids["v1"]}), 201)
        del app.headers["authorization"]
        yield app


def sign_in(app: TestClient, token: str) -> Answer:
    response: Answer = app.post("/ui/login", json={"token": token}, headers={"x-bgserve-ui": "1"})
    return response


def test_nothing_is_shown_or_done_without_signing_in(guarded: TestClient) -> None:
    guarded.cookies.clear()
    for path in ("/ui", "/ui/d/chat"):
        moved = guarded.get(path, follow_redirects=False)
        assert moved.status_code == 303 and moved.headers["location"] == "/ui/login"
    assert guarded.get("/ui/live").status_code == 401
    assert guarded.get("/uix").status_code == 401  # only /ui and /ui/... check the cookie
    assert guarded.get("/ui/d/chat/live").status_code == 401
    assert guarded.post("/ui/d/chat/revert", json={}).status_code == 401
    assert guarded.get("/ui/login").status_code == 200
    assert guarded.get("/ui/static/ui.js").status_code == 200
    assert guarded.get("/ui/static/../auth.py").status_code in (404, 401)


def test_sign_in_keeps_the_token_in_a_strict_httponly_cookie(guarded: TestClient) -> None:
    guarded.cookies.clear()
    no_header = guarded.post("/ui/login", json={"token": DEPLOYER})
    assert no_header.status_code == 403
    assert sign_in(guarded, "wrong").status_code == 401
    signed = sign_in(guarded, DEPLOYER)
    assert signed.status_code == 200 and signed.json()["role"] == "deployer"
    cookie = signed.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert guarded.get("/ui").status_code == 200
    # The cookie is the dashboard's only: the JSON API still wants a bearer token.
    assert guarded.get("/deployments").status_code == 401
    headers = {"x-bgserve-csrf": csrf_of(guarded.get("/ui/d/chat").text)}
    assert "Revert" in guarded.get("/ui/d/chat").text
    assert guarded.post("/ui/d/chat/revert", json={}, headers=headers).status_code == 200
    forged = {"x-bgserve-csrf": "0" * 64}
    assert guarded.post("/ui/d/chat/revert", json={}, headers=forged).status_code == 403
    assert guarded.post("/ui/logout", json={}, headers=headers).status_code == 200
    guarded.cookies.clear()


def test_a_viewer_sees_no_action_and_may_take_none(guarded: TestClient) -> None:
    guarded.cookies.clear()
    assert sign_in(guarded, VIEWER).status_code == 200
    page = guarded.get("/ui/d/chat")
    assert page.status_code == 200 and "Release timeline" in page.text
    main = page.text.split("<main", 1)[1]
    assert "<button" not in main and "<form" not in main
    headers = {"x-bgserve-csrf": csrf_of(page.text)}
    refused = guarded.post("/ui/d/chat/revert", json={}, headers=headers)
    assert refused.status_code == 403 and "viewer" in refused.json()["message"]
    signed_out = guarded.post("/ui/logout", json={}, headers=headers)
    assert (
        signed_out.status_code == 200 and 'bgserve_session=""' in signed_out.headers["set-cookie"]
    )
    guarded.cookies.clear()


def test_the_assets_ship_inside_the_package() -> None:
    import bgserve.ui

    static = Path(bgserve.ui.__file__).parent / "static"
    assert {p.name for p in static.iterdir()} >= {"ui.css", "ui.js"}
