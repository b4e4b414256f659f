"""What the data plane reads from a chat completion as it passes: the stream meter on
pieces cut anywhere, and a streamed answer assembled for a shadow pair."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bgserve.dataplane.http1_relay import ResponseReader
from bgserve.dataplane.openai_api import assembled
from bgserve.dataplane.stream_meter import (
    STREAM_COUNTERS,
    TOKEN_SUM_AT,
    TOKENS_AT,
    TPOT_AT,
    TTFT_AT,
    StreamMeter,
    record,
)
from bgserve.domain.latency import bucket_of


def event(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"object": "chat.completion.chunk", **extra}
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body["choices"] = [] if delta is None else [choice]
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def stream(words: list[str], usage: int | None = None) -> bytes:
    parts = [event({"role": "assistant", "content": ""})]
    parts += [event({"content": w}) for w in words]
    parts.append(event({}, "stop"))
    if usage is not None:
        parts.append(event(None, usage={"completion_tokens": usage, "prompt_tokens": 3}))
    return b"".join(parts) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("size", [1, 7, 50, 10_000])
def test_content_events_are_counted_once_however_the_body_is_cut(size: int) -> None:
    body = stream(["a", "b", "c", "d"])
    meter = StreamMeter(streaming=True, started=time.perf_counter())
    meter.feed([body[i : i + size] for i in range(0, len(body), size)])
    assert meter.chunks == 4
    assert meter.output_tokens() == 4
    assert meter.ttft_ms() is not None


def test_the_first_token_is_the_first_event_with_content_not_the_role_event() -> None:
    started = time.perf_counter()
    meter = StreamMeter(streaming=True, started=started)
    meter.feed([event({"role": "assistant", "content": ""}), event({"content": None})])
    assert meter.ttft_ms() is None
    time.sleep(0.02)
    meter.feed([event({"content": "hi"})])
    ttft = meter.ttft_ms()
    assert ttft is not None and ttft >= 20
    assert meter.tpot_ms() is None  # one token: no time per token after the first


def test_reported_usage_wins_over_counted_events_and_sets_time_per_token() -> None:
    meter = StreamMeter(streaming=True, started=time.perf_counter())
    meter.feed([event({"content": "a"})])
    time.sleep(0.04)
    meter.feed([event({"content": "b"}), event(None, usage={"completion_tokens": 9})])
    assert meter.chunks == 2 and meter.output_tokens() == 9
    tpot = meter.tpot_ms()
    assert tpot is not None and 40 / 8 <= tpot < 40  # 40 ms over the 8 tokens after the first


def test_a_plain_answer_gives_its_usage_even_with_the_count_cut_in_two() -> None:
    body = json.dumps(
        {"choices": [{"message": {"content": "hi"}}], "usage": {"completion_tokens": 123}}
    ).encode()
    cut = body.index(b"123") + 2  # "12" in one piece, "3" in the next
    meter = StreamMeter(streaming=False)
    meter.feed([body[:cut]])
    meter.feed([body[cut:]])
    assert meter.output_tokens() == 123
    assert meter.ttft_ms() is None and meter.tpot_ms() is None


def test_record_adds_an_answer_to_the_slots_histograms() -> None:
    counters = [0] * STREAM_COUNTERS
    meter = StreamMeter(streaming=True, started=time.perf_counter())
    meter.feed([stream(["a", "b", "c"], usage=3)])
    record(counters, meter)
    record(counters, StreamMeter(streaming=False))  # nothing measured: nothing added
    assert sum(counters[TTFT_AT:TPOT_AT]) == 1
    assert sum(counters[TPOT_AT:TOKENS_AT]) == 1
    assert counters[TOKENS_AT + bucket_of(3)] == 1
    assert counters[TOKEN_SUM_AT] == 3


def test_a_streamed_answer_is_assembled_into_one_chat_completion() -> None:
    body = stream(["Hello", ", ", "world"], usage=3)
    answer = json.loads(assembled(body))
    assert answer["object"] == "chat.completion"
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello, world"},
            "finish_reason": "stop",
        }
    ]
    assert answer["usage"]["completion_tokens"] == 3
    cut = json.loads(assembled(body[: body.index(b"world") - 20]))
    assert cut["choices"][0]["message"]["content"] == "Hello, "
    plain = b'{"object": "chat.completion", "choices": []}'
    assert assembled(plain) == plain


def tool_call_stream() -> bytes:
    """A streamed answer that calls two tools, as OpenAI streams one (names first, then
    the arguments in pieces), then finishes with ``tool_calls``."""
    first = {"index": 0, "id": "call_a", "type": "function"}
    second = {"index": 1, "id": "call_b", "type": "function"}
    parts = [
        event({"role": "assistant", "content": None}),
        event({"tool_calls": [first | {"function": {"name": "weather", "arguments": ""}}]}),
        event({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        event({"tool_calls": [{"index": 0, "function": {"arguments": '"Rome"}'}}]}),
        event({"tool_calls": [second | {"function": {"name": "time", "arguments": "{}"}}]}),
        event({}, "tool_calls"),
    ]
    return b"".join(parts) + b"data: [DONE]\n\n"


def test_a_tool_call_stream_has_a_first_token_and_counts_its_argument_pieces() -> None:
    started = time.perf_counter()
    meter = StreamMeter(streaming=True, started=started)
    meter.feed([tool_call_stream()])
    assert meter.ttft_ms() is not None
    assert meter.chunks == 3  # the argument pieces: an empty one is no output
    assert meter.output_tokens() == 3


def test_a_streamed_tool_call_is_assembled_as_openai_answers_it_unstreamed() -> None:
    answer = json.loads(assembled(tool_call_stream()))
    message = answer["choices"][0]["message"]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] is None
    assert message["tool_calls"] == [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
        },
        {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}},
    ]


def test_the_slots_queue_wait_is_left_out_of_the_time_to_first_token() -> None:
    started = time.perf_counter()
    meter = StreamMeter(streaming=True, started=started)
    meter.queued = 0.05  # the slot said: 50 ms waiting for the model
    time.sleep(0.08)
    meter.feed([event({"content": "hi"})])
    ttft = meter.ttft_ms()
    assert ttft is not None and 25 <= ttft < 80
    meter.queued = 10.0  # more than the whole wait: never below 0
    assert meter.ttft_ms() == 0.0


@pytest.mark.parametrize(
    ("value", "queued_ms"),
    [
        (b"12.5", 12.5),
        (b"0", 0.0),
        (b"-3", 0.0),
        (b"nan", 0.0),
        (b"inf", 0.0),
        (b"1e99", 0.0),
        (b"twelve", 0.0),
        (b"", 0.0),
    ],
)
def test_the_response_reader_trusts_a_queue_header_only_as_a_sane_number(
    value: bytes, queued_ms: float
) -> None:
    reader = ResponseReader()
    reader.feed(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"x-bgserve-queue-ms: " + value + b"\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    assert reader.head_done and reader.queue_ms == queued_ms
    # Relayed to the client as it came, like any end-to-end header.
    assert b"x-bgserve-queue-ms: " + value + b"\r\n" in b"".join(reader.headers)
