"""A slot names its release on every answer, plain or streamed, replacing any the model
application set (the header a gateway's client reads to know which release answered)."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from bgserve.slot.release_header import ReleaseHeader


async def streamed_app(scope: Any, receive: Any, send: Any) -> None:
    headers = [(b"content-type", b"text/event-stream"), (b"X-Bgserve-Release", b"7")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for piece in (b"data: a\n\n", b"data: b\n\n"):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def run(scope: dict[str, Any]) -> list[MutableMapping[str, Any]]:
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    asyncio.run(ReleaseHeader(streamed_app, release_id=42)(scope, receive, send))
    return sent


def test_every_answer_names_the_release_once_and_streams_pass_untouched() -> None:
    sent = run({"type": "http", "method": "POST", "path": "/openai/v1/chat/completions"})
    start, *body = sent
    names = [v for k, v in start["headers"] if k.lower() == b"x-bgserve-release"]
    assert names == [b"42"]
    assert (b"content-type", b"text/event-stream") in start["headers"]
    assert [m["body"] for m in body] == [b"data: a\n\n", b"data: b\n\n", b""]


def test_other_scopes_pass_through() -> None:
    sent = run({"type": "lifespan"})
    assert [v for k, v in sent[0]["headers"] if k.lower() == b"x-bgserve-release"] == [b"7"]
