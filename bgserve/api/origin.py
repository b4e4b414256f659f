"""Without auth tokens, the control API trusts whoever reaches its loopback port; this keeps
web pages out of that trust.

A page on another site must not drive the API through the user's browser: by DNS
rebinding (its own name resolved to 127.0.0.1, so the browser sends that name in ``Host``)
or by a cross-site form or script. :class:`LocalOriginGuard` therefore answers only a
``Host`` that names this server (the bind address, ``localhost``, ``127.0.0.1``, ``[::1]``,
or a name in ``BGSERVE_CONTROL_ALLOWED_HOSTS``; any port, since a tunnel may change it), and
refuses a state-changing request that a browser marks as coming from another origin
(``Origin``, ``Sec-Fetch-Site``) or that carries a body other than JSON (what a plain HTML
form sends). Probes answer any ``Host``. With tokens configured the guard is off: a
browser cannot add a bearer token to a cross-site request, and the dashboard's cookie is
SameSite=Strict with a CSRF header.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from bgserve.api.guard import PROBES, send_json

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
HOSTS_SETTING = "BGSERVE_CONTROL_ALLOWED_HOSTS"


def host_name(host: str) -> str:
    """The name part of a ``Host`` value, lower case, without the port."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


class LocalOriginGuard:
    """ASGI middleware of the no-token mode: refuse foreign hosts, origins and form bodies."""

    def __init__(self, app: ASGIApp, bind_host: str, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.extra = frozenset(h.lower() for h in allowed_hosts)
        self.allowed = frozenset({*LOCAL_NAMES, _bracketed(bind_host.lower()), *self.extra})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refusal(scope["method"], headers)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, rule, message = refusal
        await send_json(send, status, {"error": rule, "message": message})

    def _refusal(self, method: str, headers: dict[str, str]) -> tuple[int, str, str] | None:
        host = headers.get("host", "")
        if host_name(host) not in self.allowed:
            return (
                403,
                "ForeignHost",
                f"Host {host!r} is not this server: without auth tokens bgserve answers only "
                f"{', '.join(sorted(self.allowed))} (any port), against DNS rebinding; add the "
                f"name to {HOSTS_SETTING}, or configure BGSERVE_AUTH_TOKENS",
            )
        if method in SAFE_METHODS:
            return None
        return self._cross_site(host, headers) or self._form_body(headers)

    def _cross_site(self, host: str, headers: dict[str, str]) -> tuple[int, str, str] | None:
        origin = headers.get("origin")
        site = headers.get("sec-fetch-site", "").lower()
        if origin is not None:
            netloc = urlsplit(origin).netloc.lower()
            # A proxy may rewrite Host; the names the operator allowed are trusted origins.
            if netloc == host.lower() or (netloc and host_name(netloc) in self.extra):
                return None
        if origin is not None or site in ("cross-site", "same-site"):
            return (
                403,
                "CrossOrigin",
                f"a change from another origin ({origin or site}) is refused without auth "
                "tokens: call from this server's own pages or a non-browser client, or "
                "configure BGSERVE_AUTH_TOKENS",
            )
        return None

    @staticmethod
    def _form_body(headers: dict[str, str]) -> tuple[int, str, str] | None:
        content_type = headers.get("content-type")
        has_body = headers.get("content-length", "0").strip() not in ("", "0") or (
            "transfer-encoding" in headers
        )
        if (content_type is None and not has_body) or (
            content_type is not None and _is_json(content_type)
        ):
            return None
        return (
            415,
            "NotJson",
            f"a change must send its body as application/json (got {content_type or 'none'}): "
            "without auth tokens bgserve refuses other bodies, which any web page's form "
            "can send",
        )
