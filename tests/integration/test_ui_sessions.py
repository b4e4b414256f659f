"""The dashboard's sign-in on a real ``bgserve serve`` over HTTP: the cookie is an opaque
session id that sign-out revokes, the CSRF token changes with each sign-in, the cookie is
``Secure`` when a trusted proxy forwards https, and wrong tokens are throttled (429)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.processes import serving

pytestmark = pytest.mark.integration

DEPLOYER = "deployer-token-sessions"
UI = {"x-bgserve-ui": "1"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[str]:
    home: Path = tmp_path_factory.mktemp("sessions")
    env = {
        "BGSERVE_BACKEND": "memory",
        "BGSERVE_AUTH_TOKENS": f"deployer:{DEPLOYER}",
        "BGSERVE_CONTROL_SIGN_IN_FAILURES_PER_MINUTE": "3",
    }
    with serving(home, mlflow_store, env) as url:
        yield url


def sign_in(url: str, token: str = DEPLOYER, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/ui/login", json={"token": token}, headers={**UI, **headers})


def csrf_of(page: str) -> str:
    found = re.search(r"name='bgserve-csrf' content='([0-9a-f]{64})'", page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def test_sign_out_revokes_the_cookie_and_each_sign_in_rotates_the_csrf_token(
    served: str,
) -> None:
    signed = sign_in(served)
    assert signed.status_code == 200, signed.text
    session = signed.cookies["bgserve_session"]
    assert DEPLOYER not in session and DEPLOYER not in signed.headers["set-cookie"]
    with httpx.Client(base_url=served, cookies={"bgserve_session": session}) as browser:
        csrf = csrf_of(browser.get("/ui").text)
        again = sign_in(served).cookies["bgserve_session"]
        with httpx.Client(base_url=served, cookies={"bgserve_session": again}) as other:
            assert csrf_of(other.get("/ui").text) != csrf
        out = browser.post("/ui/logout", json={}, headers={"x-bgserve-csrf": csrf})
        assert out.status_code == 200
    # A copy of the cookie taken before sign-out is refused afterwards.
    with httpx.Client(base_url=served, cookies={"bgserve_session": session}) as replay:
        assert replay.get("/ui/live").status_code == 401
        assert replay.get("/ui", follow_redirects=False).status_code == 303
    with httpx.Client(base_url=served, cookies={"bgserve_session": again}) as other:
        assert other.get("/ui/live").status_code == 200  # only that session ended


def test_the_cookie_is_secure_when_a_trusted_proxy_forwards_https(served: str) -> None:
    plain = sign_in(served).headers["set-cookie"].lower()
    assert "secure" not in plain
    forwarded = sign_in(served, **{"x-forwarded-proto": "https"}).headers["set-cookie"].lower()
    assert "secure" in forwarded and "httponly" in forwarded and "samesite=strict" in forwarded


def test_wrong_tokens_are_throttled_with_retry_after(served: str) -> None:
    # Each forwarded client address is throttled on its own (the proxy on loopback is trusted).
    guesser = {"x-forwarded-for": "203.0.113.7"}
    for _ in range(3):
        assert sign_in(served, "guess", **guesser).status_code == 401
    throttled = sign_in(served, DEPLOYER, **guesser)
    assert throttled.status_code == 429, throttled.text
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    assert "too many failed sign-ins" in throttled.json()["message"]
    assert sign_in(served, **{"x-forwarded-for": "203.0.113.8"}).status_code == 200
