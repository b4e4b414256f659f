"""The model repository extension over REST: ``POST /v2/repository/...`` on the slot server.

``index`` takes an optional ``{"ready": bool}`` and answers a JSON list of
``{"name", "version", "state", "reason"}``; ``load`` and ``unload`` answer 200 with an
empty body. A refusal or failure answers ``{"error": "..."}`` with a 4xx status, as
MLServer does. Bodies larger than :data:`MAX_BODY_BYTES` are refused unread (413).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bgserve.slot.repository import (
    BundleRepository,
    InvalidModelName,
    RepositoryError,
    check_name,
)

MAX_BODY_BYTES = 64 * 1024
_PREFIX = "/v2/repository/"


class BodyTooLarge(RepositoryError):
    """The request body is larger than a repository request can be."""

    status = 413


class BadBody(RepositoryError):
    """The request body is not what the endpoint takes."""


async def read_json_object(request: Request, limit: int = MAX_BODY_BYTES) -> dict[str, object]:
    """The body as a JSON object (empty means ``{}``), read no further than ``limit`` bytes.

    Raises:
        BodyTooLarge: the body (or its declared length) exceeds ``limit``.
        BadBody: the body is not a JSON object.
    """
    too_large = BodyTooLarge(
        f"the request body is larger than {limit} bytes: a repository request needs at "
        "most a small JSON object"
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        parsed = None
    except RecursionError as exc:
        raise BadBody(
            "the request body nests too deeply: a repository request is a flat JSON object "
            'such as {"ready": true}'
        ) from exc
    if not isinstance(parsed, dict):
        raise BadBody('the request body must be empty or a JSON object such as {"ready": true}')
    return parsed


def _ready_flag(body: dict[str, object]) -> bool:
    ready = body.get("ready", False)
    if not isinstance(ready, bool):
        raise BadBody(f"field 'ready' must be true or false, not {ready!r}")
    return ready


async def _answer(work: Callable[[], Awaitable[Response]]) -> Response:
    try:
        return await work()
    except RepositoryError as exc:
        return JSONResponse({"error": exc.message}, status_code=exc.status)


class RepositoryPaths:
    """ASGI middleware: a repository path holding a control character is refused here.

    Routing cannot match it (a path parameter stops at a newline), so it would otherwise
    reach kserve's own repository handler, which does not check the name.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path.startswith(_PREFIX) and any(c < " " or c == "\x7f" for c in path):
            answer = JSONResponse({"error": _control_refusal(path)}, status_code=400)
            await answer(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _control_refusal(path: str) -> str:
    name = path.removeprefix(f"{_PREFIX}models/").rpartition("/")[0]
    try:
        check_name(name)
    except InvalidModelName as exc:
        return exc.message
    return f"the path {path!r} holds a control character: no repository call has one"


def repository_router(repository: BundleRepository) -> APIRouter:
    """The three repository endpoints over ``repository``.

    ``{name:path}`` takes names with slashes too, so that they are refused with a message
    rather than falling through to a bare 404.
    """
    router = APIRouter(prefix=_PREFIX.rstrip("/"))

    @router.post("/index")
    async def index(request: Request) -> Response:
        async def work() -> Response:
            ready_only = _ready_flag(await read_json_object(request))
            entries = await asyncio.to_thread(repository.index, ready_only)
            return JSONResponse([e.as_json() for e in entries])

        return await _answer(work)

    @router.post("/models/{name:path}/load")
    async def load(name: str, request: Request) -> Response:
        async def work() -> Response:
            await read_json_object(request)
            await asyncio.to_thread(repository.load, name)
            return Response(status_code=200)

        return await _answer(work)

    @router.post("/models/{name:path}/unload")
    async def unload(name: str, request: Request) -> Response:
        async def work() -> Response:
            await read_json_object(request)
            await asyncio.to_thread(repository.unload, name)
            return Response(status_code=200)

        return await _answer(work)

    return router
