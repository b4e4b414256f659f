"""The dashboard's sign-in: the bearer token kept in an HttpOnly, SameSite=Strict cookie,
and a CSRF token every state-changing call must carry in a header.

The CSRF token is an HMAC keyed by the session's token (without tokens configured: by a
key drawn at start), so a page can show it (the script reads it from a ``<meta>``) while
another site can neither read nor compute it, and every replica and restart agrees on it;
a cross-site request also lacks the cookie (SameSite=Strict) and cannot set the header
without a CORS preflight this server never grants.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response

from bgserve.api.auth import ANONYMOUS, Authenticator, Principal
from bgserve.errors import Forbidden, Unauthorized

COOKIE = "bgserve_session"
CSRF_HEADER = "x-bgserve-csrf"
UI_HEADER = "x-bgserve-ui"
COOKIE_PATH = "/ui"
MAX_TOKEN_CHARS = 4096


class UiSession:
    """Who a dashboard request comes from, and whether a change carries its CSRF token."""

    def __init__(self, authenticator: Authenticator, key: bytes | None = None) -> None:
        self.authenticator = authenticator
        self.key = key or secrets.token_bytes(32)

    @property
    def needs_sign_in(self) -> bool:
        return self.authenticator.enabled

    def _token(self, request: Request) -> str:
        return request.cookies.get(COOKIE, "")

    def principal(self, request: Request) -> Principal:
        """The principal of the session cookie. Raises Unauthorized."""
        if not self.authenticator.enabled:
            return ANONYMOUS
        token = self._token(request)
        if not token:
            raise Unauthorized("not signed in: open /ui/login and enter your token")
        return self.authenticator.authenticate(f"Bearer {token}")

    def check_token(self, token: str) -> Principal:
        """The principal of ``token``. Raises Unauthorized."""
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("unknown bearer token")
        return self.authenticator.authenticate(f"Bearer {token}")

    @staticmethod
    def keep(token: str, response: Response, secure: bool) -> None:
        """Keep ``token`` in the session cookie: HttpOnly, SameSite=Strict, path /ui."""
        response.set_cookie(
            COOKIE, token, path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure
        )

    @staticmethod
    def sign_out(response: Response) -> None:
        """Forget the session cookie."""
        response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")

    def csrf_token(self, request: Request) -> str:
        """The CSRF token of this request's session."""
        token = self._token(request)
        key = token.encode() if self.authenticator.enabled and token else self.key
        return hmac.new(key, b"bgserve-ui-csrf", hashlib.sha256).hexdigest()

    def check_change(self, request: Request) -> None:
        """A state-changing call must carry this session's CSRF token. Raises Forbidden."""
        given = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(given.encode(), self.csrf_token(request).encode()):
            raise Forbidden(
                f"missing or wrong {CSRF_HEADER} header: reload the dashboard and try again"
            )


def check_ui_header(request: Request) -> None:
    """Sign-in has no CSRF token yet; it must still come from the dashboard's script, which
    sets a header no cross-site form can. Raises Forbidden."""
    if request.headers.get(UI_HEADER) != "1":
        raise Forbidden(f"missing {UI_HEADER} header: sign in from the /ui/login page")
