"""Reading mirrored pairs for scoring: OIP v2 and OpenAI chat bodies, streamed answers as
the data plane assembles them, error answers, and malformed bodies that must not crash."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bgserve.app.shadow_bodies import MESSAGES_KEY, answer_text, parse_inputs, parse_pair
from bgserve.backends.base import ShadowPair
from bgserve.dataplane.openai_api import assembled


def chat_request(**extra: Any) -> str:
    body = {"model": "chat", "messages": [{"role": "user", "content": "Say hi"}], **extra}
    return json.dumps(body)


def completion(text: str) -> str:
    message = {"role": "assistant", "content": text}
    return json.dumps(
        {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        }
    )


def stream(*events: dict[str, Any]) -> str:
    """An SSE answer as the slot sends it, assembled as the data plane pairs it."""
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return assembled(raw + b"data: [DONE]\n\n").decode()


def delta(text: str) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": text}}
    return {"object": "chat.completion.chunk", "choices": [choice]}


def oip_answer(text: str) -> str:
    return json.dumps({"outputs": [{"name": "output", "datatype": "BYTES", "data": [text]}]})


def pair(request: str, blue: str, green: str | None, error: str | None = None) -> ShadowPair:
    return ShadowPair("r", request, blue, green, error, 3.0, 4.0)


def test_a_chat_pair_reads_the_message_content_and_shows_variables_and_messages() -> None:
    request = chat_request(variables={"topic": "tea", "n": 2}, stream=True)
    parsed = parse_pair(pair(request, completion("Hi there"), completion("Hello there")))
    assert parsed is not None
    assert (parsed.blue, parsed.green, parsed.green_error) == ("Hi there", "Hello there", None)
    assert parsed.inputs == {"topic": "tea", "n": "2", MESSAGES_KEY: "user: Say hi"}
    assert parsed.green_ms == 4.0


def test_a_streamed_answer_assembled_by_the_data_plane_reads_as_its_whole_text() -> None:
    blue = stream(delta("Hi"), delta(" there"), {"choices": [], "usage": {"total_tokens": 3}})
    parsed = parse_pair(pair(chat_request(stream=True), blue, completion("Hi there")))
    assert parsed is not None and parsed.blue == parsed.green == "Hi there"


def test_content_parts_and_several_messages_are_shown_in_order() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]
    assert parse_inputs(json.dumps({"model": "m", "messages": messages})) == {
        MESSAGES_KEY: "system: Be brief.\nuser: ab"
    }


def test_an_oip_pair_reads_as_before() -> None:
    request = json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "data": ["q"]}]})
    parsed = parse_pair(pair(request, oip_answer("a"), oip_answer("b")))
    assert parsed is not None
    assert (parsed.inputs, parsed.blue, parsed.green) == ({"text": "q"}, "a", "b")


@pytest.mark.parametrize(
    "green",
    [
        json.dumps({"error": {"message": "model overloaded", "type": "server_error"}}),
        stream(delta("Hi"), {"error": {"message": "model overloaded", "code": 500}}),
    ],
    ids=["plain", "last event of a stream"],
)
def test_an_openai_error_answer_is_greens_error(green: str) -> None:
    parsed = parse_pair(pair(chat_request(), completion("Hi"), green))
    assert parsed is not None and parsed.green is None and parsed.green_ms is None
    assert parsed.green_error == "green answered an error: model overloaded"


def test_a_blue_error_answer_leaves_nothing_to_compare_with() -> None:
    error = json.dumps({"error": {"message": "boom"}})
    assert parse_pair(pair(chat_request(), error, completion("Hi"))) is None


def test_tool_calls_without_content_are_compared_as_their_json() -> None:
    calls = [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    body = json.dumps({"choices": [{"message": {"content": None, "tool_calls": calls}}]})
    assert json.loads(answer_text(body)) == calls


MALFORMED = [
    "",
    "not json",
    "null",
    "[]",
    "[" * 100_000,
    '{"choices": []}',
    '{"choices": "x"}',
    '{"choices": [{"message": "x"}]}',
    '{"choices": [{"message": {"content": 3}}]}',
    '{"choices": [null]}',
    '{"error": null}',
    '{"outputs": [{"name": "output", "data": []}]}',
    '{"messages": "x"}',
    '{"messages": [1, null, {"role": "user", "content": [1, null]}], "variables": []}',
    '{"variables": {"a": {"b": [1]}}}',
    '{"inputs": [{"name": "text"}]}',
    completion("cut")[:30],
]


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_bodies_never_raise_anything_but_a_refusal(body: str) -> None:
    parse_inputs(body)  # returns None or what it could read, never raises
    for request, blue, green in [(body, body, body), (body, completion("a"), body)]:
        parsed = parse_pair(pair(request, blue, green))
        if parsed is not None and parsed.green is None:
            assert parsed.green_error is not None
