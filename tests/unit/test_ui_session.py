"""The dashboard's session: which token a request carries and the CSRF token it needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.requests import Request

from bgserve.api.auth import Authenticator
from bgserve.errors import Forbidden, Unauthorized
from bgserve.settings import Settings
from bgserve.ui.session import COOKIE, CSRF_HEADER, UiSession


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


def test_every_replica_agrees_on_a_sessions_csrf_token_and_no_two_sessions_share_one(
    tmp_path: Path,
) -> None:
    one, other = UiSession(authenticator(tmp_path)), UiSession(authenticator(tmp_path))
    token_a = one.csrf_token(request("tok-a"))
    assert token_a == other.csrf_token(request("tok-a"))
    assert token_a != one.csrf_token(request("tok-b"))
    assert "tok-a" not in token_a
    other.check_change(request("tok-a", token_a))
    with pytest.raises(Forbidden):
        other.check_change(request("tok-b", token_a))
    with pytest.raises(Forbidden):
        other.check_change(request("tok-a"))


def test_a_session_is_its_cookies_token_and_nothing_else(tmp_path: Path) -> None:
    session = UiSession(authenticator(tmp_path))
    assert session.principal(request("tok-b")).role.name == "VIEWER"
    for cookie in (None, "", "tok-c"):
        with pytest.raises(Unauthorized):
            session.principal(request(cookie))
    with pytest.raises(Unauthorized):
        session.check_token("x" * 5000)


def test_without_tokens_the_key_is_this_process_own(tmp_path: Path) -> None:
    open_api = Authenticator.from_settings(Settings(home=tmp_path))
    one, other = UiSession(open_api), UiSession(open_api)
    assert one.principal(request()).name == "anonymous"
    assert one.csrf_token(request()) != other.csrf_token(request())
