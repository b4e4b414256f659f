"""The slot's check of infer request bodies, in front of kserve's REST server.

kserve takes any infer body that is not a JSON object for its binary tensor extension
and answers that the ``inference-header-content-length`` header is missing, which tells
a client nothing about what to send. :class:`JsonInferBody` answers a 400 showing the
expected body instead.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any, overload

_JSON_KINDS = {
    list: "a JSON array",
    str: "a JSON string",
    int: "a JSON number",
    float: "a JSON number",
    bool: "a JSON boolean",
    type(None): "JSON null",
}


def infer_body_problem(body: bytes, variables: Sequence[str]) -> str | None:
    """Why ``body`` cannot be an OIP v2 JSON infer request, or None if it is a JSON object.

    The message shows the expected body with the model's own input names.
    """
    if not body.strip():
        found = "empty"
    else:
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, ValueError):
            found = "not valid JSON"
        else:
            if isinstance(parsed, dict):
                return None
            found = _JSON_KINDS.get(type(parsed), "JSON that is not an object")
    example = [
        {"name": name, "datatype": "BYTES", "shape": [1], "data": ["..."]}
        for name in variables or ["text"]
    ]
    return (
        f"the request body is {found}: send a JSON object like "
        f"{json.dumps({'inputs': example})}, one BYTES input per template variable"
    )


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Asgi = Callable[[Scope, Receive, Send], Awaitable[None]]
# kserve's binary tensor extension sends this header with a non-JSON body on purpose.
_BINARY_HEADER = b"inference-header-content-length"


class JsonInferBody:
    """ASGI middleware: a JSON infer body that is not an object gets a 400 naming the shape.

    kserve takes any such body for its binary extension and answers that a header is
    missing; a JSON object sent without a JSON content type is passed on as JSON.
    """

    def __init__(self, app: Asgi, variables: Callable[[], Sequence[str]]) -> None:
        self.app = app
        self.variables = variables

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._applies(scope):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        problem = infer_body_problem(body, self.variables())
        if problem is not None:
            await send_json(send, 400, {"error": problem})
            return
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
        scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, replay_body(body, receive), send)

    @staticmethod
    def _applies(scope: Scope) -> bool:
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path: str = scope["path"]
        if not (path.startswith("/v2/models/") and path.endswith("/infer")):
            return False
        return all(key != _BINARY_HEADER for key, _ in scope["headers"])


@overload
async def read_body(receive: Receive) -> bytes: ...
@overload
async def read_body(receive: Receive, limit: int) -> bytes | None: ...
async def read_body(receive: Receive, limit: int | None = None) -> bytes | None:
    """The whole request body of an ASGI request; None as soon as it grows past ``limit``
    bytes (the rest is not read)."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        part = message.get("body", b"")
        size += len(part)
        if limit is not None and size > limit:
            return None
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` (already read) first, then what ``receive`` gives."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # the disconnect, when it comes
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def send_json(send: Send, status: int, payload: dict[str, str]) -> None:
    """Answer an ASGI request with ``payload`` as JSON."""
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
