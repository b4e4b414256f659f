"""The dashboard's sessions: opaque ids, revocation, expiry, a CSRF token per session, and
throttled sign-in."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.requests import Request

from bgserve.api.auth import Authenticator
from bgserve.errors import Forbidden, Unauthorized
from bgserve.settings import Settings
from bgserve.ui.session import COOKIE, CSRF_HEADER, SignInThrottled, UiSession


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(cookie: str | None = None, csrf: str | None = None) -> Request:
    headers = []
    if cookie is not None:
        headers.append((b"cookie", f"{COOKIE}={cookie}".encode()))
    if csrf is not None:
        headers.append((CSRF_HEADER.encode(), csrf.encode()))
    return Request({"type": "http", "method": "POST", "path": "/ui", "headers": headers})


def authenticator(tmp_path: Path) -> Authenticator:
    settings = Settings(home=tmp_path, auth_tokens="deployer:tok-a,viewer:tok-b")
    return Authenticator.from_settings(settings)


def test_a_session_id_is_opaque_and_each_sign_in_has_its_own_csrf_token(tmp_path: Path) -> None:
    ui = UiSession(authenticator(tmp_path))
    first, who = ui.sign_in("tok-a", "10.0.0.1")
    second, _ = ui.sign_in("tok-a", "10.0.0.1")
    assert who.role.name == "DEPLOYER"
    assert "tok-a" not in first and first != second
    csrf = ui.csrf_token(request(first))
    assert csrf != ui.csrf_token(request(second))
    ui.check_change(request(first, csrf))
    with pytest.raises(Forbidden):
        ui.check_change(request(second, csrf))
    with pytest.raises(Forbidden):
        ui.check_change(request(first))
    with pytest.raises(Unauthorized):
        ui.principal(request("tok-a"))  # the token itself is no session


def test_sign_out_and_expiry_end_a_session_on_the_server(tmp_path: Path) -> None:
    clock = Clock()
    ui = UiSession(authenticator(tmp_path), ttl=60, clock=clock)
    ended, _ = ui.sign_in("tok-b", "a")
    kept, _ = ui.sign_in("tok-b", "a")
    ui.sessions.end(ended)
    with pytest.raises(Unauthorized):
        ui.principal(request(ended))
    assert ui.principal(request(kept)).role.name == "VIEWER"
    clock.now += 61
    with pytest.raises(Unauthorized):
        ui.principal(request(kept))


def test_wrong_tokens_from_one_address_are_throttled_for_a_minute(tmp_path: Path) -> None:
    clock = Clock()
    ui = UiSession(authenticator(tmp_path), failures_per_minute=3, clock=clock)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            ui.sign_in("wrong", "10.0.0.9")
        clock.now += 1
    with pytest.raises(SignInThrottled) as throttled:
        ui.sign_in("tok-a", "10.0.0.9")  # even the right token, while throttled
    assert 55 <= throttled.value.retry_after <= 60
    ui.sign_in("tok-a", "10.0.0.8")  # another address is not affected
    clock.now += 58
    ui.sign_in("tok-a", "10.0.0.9")
    with pytest.raises(Unauthorized):
        ui.sign_in("x" * 5000, "10.0.0.7")


def test_without_tokens_the_key_is_this_process_own(tmp_path: Path) -> None:
    open_api = Authenticator.from_settings(Settings(home=tmp_path))
    one, other = UiSession(open_api), UiSession(open_api)
    assert one.principal(request()).name == "anonymous"
    assert one.csrf_token(request()) != other.csrf_token(request())
