"""A slot's record of its exchanges: kept only while drained, bounded, behind a token."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import pytest

from bgserve.dataplane.wire import BODY_CAP
from bgserve.slot.exchanges import (
    DRAIN_PATH,
    RECORD_WINDOW,
    Exchange,
    ExchangeLog,
    ExchangeRecorder,
)
from bgserve.slot.infer_body import Message, Receive, Scope, Send
from bgserve.slot.server import parse_args

TOKEN = "s3cret-token"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers the request body upper-cased, in two chunks; a streamed SSE answer when
    the path ends in /stream."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"].endswith("/stream"):
        events = [
            {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
            {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
        ]
        chunks = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
        chunks.append(b"data: [DONE]\n\n")
    else:
        chunks = [body.upper()[:3], body.upper()[3:]]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for n, chunk in enumerate(chunks):
        last = n == len(chunks) - 1
        await send({"type": "http.response.body", "body": chunk, "more_body": not last})


def call(
    app: ExchangeRecorder,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, bytes]:
    """One exchange through ``app``; the body arrives in two parts."""
    parts = [body[: len(body) // 2], body[len(body) // 2 :]]
    sent: list[Message] = []

    async def receive() -> Message:
        chunk = parts.pop(0) if parts else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(parts)}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def drain(app: ExchangeRecorder) -> dict[str, Any]:
    status, body = call(app, DRAIN_PATH, headers={"authorization": f"Bearer {TOKEN}"})
    assert status == 200
    page: dict[str, Any] = json.loads(body)
    return page


def recorder(capacity: int = 10, max_bytes: int = 10**6) -> tuple[ExchangeRecorder, Clock]:
    clock = Clock()
    return ExchangeRecorder(echo_app, ExchangeLog(capacity, max_bytes, clock), TOKEN, 7), clock


def test_nothing_is_recorded_until_drained_and_after_the_window_without_a_drain() -> None:
    app, clock = recorder()
    assert call(app, "/v2/models/m/infer", b"hello", {"x-request-id": "a"}) == (200, b"HELLO")
    assert drain(app)["exchanges"] == []
    call(app, "/v2/models/m/infer", b"again", {"x-request-id": "b"})
    clock.now += RECORD_WINDOW + 1
    call(app, "/v2/models/m/infer", b"late", {"x-request-id": "c"})
    assert [e["request_id"] for e in drain(app)["exchanges"]] == ["b"]


def test_an_exchange_is_recorded_with_the_whole_bodys_digest_and_whether_it_was_a_copy() -> None:
    app, _ = recorder()
    drain(app)
    body = b"x" * (BODY_CAP + 10)
    call(app, "/v2/models/m/infer", body, {"x-request-id": "r1", "host": "gw-shadow:8080"})
    call(app, "/v2/models/m/infer", b"short", {"x-request-id": "r2", "host": "gw"})
    call(app, "/v2/models/m/infer", b"no id")  # not recorded: nothing to pair it by
    first, second = drain(app)["exchanges"]
    assert first["digest"] == hashlib.sha256(body).hexdigest()
    assert len(first["request_body"]) == BODY_CAP and first["truncated"] is True
    assert (first["mirrored"], first["release_id"], first["status"]) == (True, 7, 200)
    assert second["mirrored"] is False and second["truncated"] is False
    assert (second["request_body"], second["answer_body"]) == ("short", "SHORT")


def test_a_streamed_answer_is_recorded_as_the_one_completion_it_adds_up_to() -> None:
    app, _ = recorder()
    drain(app)
    call(app, "/openai/v1/chat/completions/stream", b"{}", {"x-request-id": "s"})
    (record,) = drain(app)["exchanges"]
    answer = json.loads(record["answer_body"])
    assert answer["choices"][0]["message"]["content"] == "Hello"


def test_the_record_is_bounded_and_the_drain_counts_what_went_unread() -> None:
    app, _ = recorder(capacity=3)
    drain(app)
    for n in range(5):
        call(app, "/v2/models/m/infer", b"body", {"x-request-id": f"r{n}"})
    page = drain(app)
    assert [e["request_id"] for e in page["exchanges"]] == ["r2", "r3", "r4"]
    assert (page["unread"], page["more"]) == (2, False)
    assert drain(app)["unread"] == 0
    by_bytes = ExchangeLog(100, max_bytes=1000)
    exchange = Exchange("r", False, "d", "q" * 300, "a" * 300, 200, 1.0, False, 1)
    for _ in range(3):
        by_bytes.add(exchange)
    assert by_bytes.drain()["unread"] == 2


def test_the_drain_answers_only_the_slots_token_and_only_post() -> None:
    app, _ = recorder()
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {TOKEN}"}):
        status, body = call(app, DRAIN_PATH, headers=headers)
        assert status == 401 and b"BGSERVE_SLOT_TOKEN" in body
    assert call(app, DRAIN_PATH, method="GET")[0] == 405
    with pytest.raises(ValueError, match="token"):
        ExchangeRecorder(echo_app, ExchangeLog(1), "", 1)


def test_the_slot_refuses_to_record_without_a_drain_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--model-uri", "models:/b/1", "--deployment", "d", "--exchange-records", "10"]
    monkeypatch.delenv("BGSERVE_SLOT_TOKEN", raising=False)
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "BGSERVE_SLOT_TOKEN" in capsys.readouterr().err
    monkeypatch.setenv("BGSERVE_SLOT_TOKEN", TOKEN)
    args = parse_args(argv)
    assert (args.exchange_records, args.token) == (10, TOKEN)
