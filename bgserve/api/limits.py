"""Request body size limit, enforced on the bytes received, not only on Content-Length.

A chunked request has no Content-Length, so the limit is checked as the body streams in;
once it is exceeded the application's answer (whatever reading the cut body led to) is
replaced by a 413.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def too_large_body(limit: int) -> bytes:
    """The JSON error body of a 413."""
    return json.dumps(
        {
            "error": "PayloadTooLarge",
            "message": f"request body over {limit} bytes: send less, or raise "
            "BGSERVE_MAX_BODY_BYTES",
        }
    ).encode()


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        await _Limited(self, receive, send).run(scope)

    async def _refuse(self, send: Send) -> None:
        body = too_large_body(self.limit)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _Limited:
    """One request under the limit: counts received bytes, swaps the answer if over."""

    def __init__(self, limit: BodyLimit, receive: Receive, send: Send) -> None:
        self.limit = limit
        self.receive = receive
        self.send = send
        self.received = 0
        self.exceeded = False
        self.refused = False

    async def run(self, scope: Scope) -> None:
        await self.limit.app(scope, self._receive, self._send)
        if self.exceeded and not self.refused:
            await self._refuse_once()

    async def _receive(self) -> Message:
        if self.exceeded:
            return {"type": "http.disconnect"}
        message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit.limit:
                self.exceeded = True
                return {"type": "http.request", "body": b"", "more_body": False}
        return message

    async def _send(self, message: Message) -> None:
        if not self.exceeded:
            await self.send(message)
        elif message["type"] == "http.response.start":
            await self._refuse_once()

    async def _refuse_once(self) -> None:
        if not self.refused:
            self.refused = True
            await self.limit._refuse(self.send)
