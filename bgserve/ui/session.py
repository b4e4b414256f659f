"""The dashboard's sign-in: a server-side session behind an opaque cookie, a CSRF token per
session, and throttled sign-in.

Signing in with a bearer token creates a session: a random id in an HttpOnly,
SameSite=Strict cookie (``Secure`` when the request came over TLS, or was forwarded as https
by a trusted proxy), held here with the principal, an expiry and a random CSRF token that
every state-changing call must carry in a header. The token itself is never stored in the
browser. Signing out ends the session on the server, so a copied cookie stops working;
each sign-in draws a new id and a new CSRF token.

Sessions live in this process's memory: a restart signs everyone out, and with several
replicas the dashboard needs session affinity. Without tokens there is nothing to sign in
to; the CSRF token is then an HMAC under a key drawn at start.

A client address may send only ``failures_per_minute`` wrong tokens a minute; beyond that
every sign-in (right or wrong) is refused with the seconds to wait, so tokens cannot be
guessed at speed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request, Response

from bgserve.api.auth import ANONYMOUS, Authenticator, Principal
from bgserve.errors import Forbidden, Unauthorized

COOKIE = "bgserve_session"
CSRF_HEADER = "x-bgserve-csrf"
UI_HEADER = "x-bgserve-ui"
COOKIE_PATH = "/ui"
MAX_TOKEN_CHARS = 4096
MAX_SESSIONS = 10_000
MAX_TRACKED_ADDRESSES = 10_000
WINDOW_S = 60.0


class SignInThrottled(Unauthorized):
    """Too many wrong tokens from one address in the last minute."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(
            f"too many failed sign-ins from this address: wait {retry_after:.0f} s and try again"
        )
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Session:
    principal: Principal
    csrf: str
    expires: float


def _key_of(session_id: str) -> str:
    # Only digests are held, so the ids in memory cannot be replayed as cookies.
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Signed-in sessions by id, each until its expiry or sign-out; the oldest are dropped
    beyond :data:`MAX_SESSIONS`."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, principal: Principal) -> tuple[str, _Session]:
        """A new session of ``principal``: its id (for the cookie) and the session."""
        session_id = secrets.token_urlsafe(32)
        session = _Session(principal, secrets.token_hex(32), self._clock() + self.ttl)
        with self._lock:
            self._sessions[_key_of(session_id)] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str) -> _Session | None:
        """The live session of ``session_id``, None when unknown, ended or expired."""
        key = _key_of(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is not None and session.expires <= self._clock():
                del self._sessions[key]
                return None
            return session

    def end(self, session_id: str) -> None:
        """End a session. Idempotent."""
        with self._lock:
            self._sessions.pop(_key_of(session_id), None)


class SignInThrottle:
    """At most ``per_minute`` failed sign-ins per client address in any minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, address: str) -> None:
        """Raises SignInThrottled while ``address`` has used up its failures."""
        now = self._clock()
        with self._lock:
            failures = self._failures.get(address)
            while failures and failures[0] <= now - WINDOW_S:
                failures.popleft()
            if failures and len(failures) >= self.per_minute:
                raise SignInThrottled(max(1.0, failures[0] + WINDOW_S - now))

    def failed(self, address: str) -> None:
        """Count a wrong token from ``address``."""
        with self._lock:
            self._failures.setdefault(address, deque()).append(self._clock())
            self._failures.move_to_end(address)
            while len(self._failures) > MAX_TRACKED_ADDRESSES:
                self._failures.popitem(last=False)


class UiSession:
    """Who a dashboard request comes from, and whether a change carries its CSRF token."""

    def __init__(
        self,
        authenticator: Authenticator,
        key: bytes | None = None,
        *,
        ttl: float = 8 * 3600.0,
        failures_per_minute: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.authenticator = authenticator
        self.key = key or secrets.token_bytes(32)
        self.sessions = SessionStore(ttl, clock)
        self.throttle = SignInThrottle(failures_per_minute, clock)

    @property
    def needs_sign_in(self) -> bool:
        return self.authenticator.enabled

    def _session(self, request: Request) -> _Session | None:
        session_id = request.cookies.get(COOKIE, "")
        return self.sessions.get(session_id) if session_id else None

    def principal(self, request: Request) -> Principal:
        """The principal of the request's session. Raises Unauthorized."""
        if not self.authenticator.enabled:
            return ANONYMOUS
        session = self._session(request)
        if session is None:
            raise Unauthorized("not signed in (or signed out): open /ui/login and enter your token")
        return session.principal

    def sign_in(self, token: str, address: str) -> tuple[str, Principal]:
        """A new session for ``token``: its id and principal. Raises SignInThrottled
        (too many failures from ``address``) or Unauthorized (a wrong token)."""
        self.throttle.check(address)
        try:
            if len(token) > MAX_TOKEN_CHARS:
                raise Unauthorized("unknown bearer token")
            principal = self.authenticator.authenticate(f"Bearer {token}")
        except Unauthorized:
            self.throttle.failed(address)
            raise
        session_id, _ = self.sessions.create(principal)
        return session_id, principal

    def sign_out(self, request: Request, response: Response) -> None:
        """End the request's session on the server and forget its cookie."""
        self.sessions.end(request.cookies.get(COOKIE, ""))
        response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")

    @staticmethod
    def keep(session_id: str, response: Response, secure: bool) -> None:
        """Keep the session id in the cookie: HttpOnly, SameSite=Strict, path /ui."""
        response.set_cookie(
            COOKIE, session_id, path=COOKIE_PATH, httponly=True, samesite="strict", secure=secure
        )

    def csrf_token(self, request: Request) -> str:
        """The CSRF token of this request's session."""
        if self.authenticator.enabled:
            session = self._session(request)
            # Without a session nothing can change; a random value matches nothing.
            return session.csrf if session is not None else secrets.token_hex(32)
        return hmac.new(self.key, b"bgserve-ui-csrf", hashlib.sha256).hexdigest()

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
