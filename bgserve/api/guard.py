"""What every request goes through before a route sees it.

:class:`RequestContext` (outermost) gives each request an id, sent back as
``x-request-id``, and turns any unexpected exception into a JSON 500 carrying that id,
logged once with its traceback and never showing the exception's text to the caller.

:class:`AuthGate` authenticates before routing, so an unauthenticated caller gets 401
whatever it sent: ``/healthz`` and ``/readyz`` are open, every other path (``/metrics``,
the API docs, unknown paths) needs a known token, unless ``public_metrics_and_docs``
opens ``/metrics`` and the docs. :class:`GuardedRoute` then checks the role the route
declares through its ``viewer``/``deployer``/``admin`` dependency (403), still before
the body is read or validated.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Coroutine, Iterable, Set
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bgserve import errors
from bgserve.api import deps
from bgserve.api.auth import Authenticator, Role, require
from bgserve.api.errors import error_body

log = logging.getLogger("bgserve.api")

PROBES = frozenset({"/healthz", "/readyz"})
REQUEST_ID_HEADER = "x-request-id"
_SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ROLE_OF: dict[Callable[..., Any], Role] = {
    deps.viewer: Role.VIEWER,
    deps.deployer: Role.DEPLOYER,
    deps.admin: Role.ADMIN,
}


async def send_json(send: Send, status: int, body: dict[str, Any], **headers: str) -> None:
    """Send one complete JSON response."""
    raw = json.dumps(body).encode()
    pairs = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
        *((k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": pairs})
    await send({"type": "http.response.body", "body": raw})


def request_id_of(scope: Scope) -> str:
    """The client's ``x-request-id`` when it is a short safe token, else a new one."""
    given = dict(scope.get("headers", ())).get(REQUEST_ID_HEADER.encode(), b"")
    text = given.decode("latin-1")
    return text if _SAFE_ID.fullmatch(text) else uuid.uuid4().hex


class RequestContext:
    """ASGI middleware: a request id on every response; a JSON 500 for the unexpected."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", ()) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unexpected error (request id %s) on %s %s",
                request_id,
                scope.get("method"),
                scope.get("path"),
            )
            if not started:
                await send_json(send_with_id, 500, internal_error_body(request_id))


def internal_error_body(request_id: str) -> dict[str, Any]:
    """The body of a 500: what happened in general terms, and the id to find the log."""
    return {
        "error": "InternalError",
        "message": f"unexpected error; the server log has the details under request id "
        f"{request_id}",
        "request_id": request_id,
    }


def declared_role(dependant: Dependant) -> Role | None:
    """The highest role a route's dependencies (at any depth) require, if any."""
    found = [_ROLE_OF[d.call] for d in _walk(dependant) if d.call in _ROLE_OF]
    return max(found, default=None)


def _walk(dependant: Dependant) -> Iterable[Dependant]:
    for child in dependant.dependencies:
        yield child
        yield from _walk(child)


class GuardedRoute(APIRoute):
    """A route that checks its declared role before FastAPI reads or validates the body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        role = declared_role(self.dependant)
        if role is None:
            return handler

        async def guarded(request: Request) -> Response:
            request.state.principal = require(deps.principal_of(request), role)
            return await handler(request)

        return guarded


class AuthGate:
    """ASGI middleware: every path but ``open_paths`` needs a known bearer token (401).

    It runs before routing, so an unauthenticated caller learns nothing (not even which
    paths exist) and no body is read; :class:`GuardedRoute` then checks the route's role.
    Paths under ``own_auth`` prefixes (the dashboard's ``/ui/``) check their session
    cookie themselves.
    """

    def __init__(
        self,
        app: ASGIApp,
        authenticator: Authenticator,
        open_paths: Set[str],
        own_auth: tuple[str, ...] = (),
    ):
        self.app = app
        self.authenticator = authenticator
        self.open_paths = frozenset(open_paths)
        self.own_auth = own_auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.authenticator.enabled:
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        if path not in self.open_paths and not path.startswith(self.own_auth):
            try:
                principal = self.authenticator.authenticate(_header(scope, b"authorization"))
            except errors.Unauthorized as exc:
                await send_json(send, 401, error_body(exc), www_authenticate="Bearer")
                return
            scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def open_paths(api: FastAPI, public_metrics_and_docs: bool) -> set[str]:
    """Paths anyone may call: the probes, and ``/metrics`` and the docs when made public."""
    if not public_metrics_and_docs:
        return set(PROBES)
    docs = {api.openapi_url, api.docs_url, api.redoc_url, api.swagger_ui_oauth2_redirect_url}
    return set(PROBES) | {"/metrics"} | {p for p in docs if p}


def _route_path(scope: Scope) -> str:
    """The path the router matches: without the ``root_path`` a proxy may have added."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None
