"""A release's chat prompt spec, and the slot's check of OpenAI chat requests."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bgserve.errors import InvalidInput
from bgserve.evaluation.prompt_spec import PromptSpec
from bgserve.slot.openai_request import OpenAIRefusal, parse_chat

MESSAGES = [
    {"role": "system", "content": "You are {{ style }}."},
    {"role": "user", "content": "{{question}} ({{style}})"},
]


def test_chat_content_lists_variables_across_messages_and_keeps_generation_keys() -> None:
    content = PromptSpec.of(
        MESSAGES, {"temperature": 0.2, "max_tokens": 5, "top_k": 3}, {"type": "object"}, "p"
    )
    assert content.is_chat and content.variables == ["style", "question"]
    assert content.bundle_config() == {
        "messages": MESSAGES,
        "model_config": {"temperature": 0.2, "max_tokens": 5},
        "response_format": {"type": "object"},
    }


def test_text_content_keeps_the_bundle_config_it_always_had() -> None:
    content = PromptSpec.of("Sum up {{text}}", None, None, "p")
    assert not content.is_chat and content.bundle_config() == {"template": "Sum up {{text}}"}


@pytest.mark.parametrize("message", [{"role": "user"}, {"role": 1, "content": "x"}, "hi"])
def test_a_malformed_chat_message_is_refused_naming_the_prompt(message: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        PromptSpec.of([message], None, None, "prompts:/p/3")
    assert "prompts:/p/3" in refused.value.message and refused.value.field == "prompt_uri"


def body(**fields: Any) -> bytes:
    return json.dumps({"model": "chat", "messages": [], **fields}).encode()


def test_a_request_yields_variables_params_and_stream_options() -> None:
    call = parse_chat(
        body(
            variables={"style": "terse"},
            max_completion_tokens=9,
            temperature=0.5,
            user="u1",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        ),
        "chat",
    )
    assert call.variables == {"style": "terse"} and call.stream and call.include_usage
    assert call.params == {"temperature": 0.5, "max_tokens": 9}
    assert call.messages == [{"role": "user", "content": "hi"}]


TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_choices_and_tools_are_passed_on_as_the_client_gave_them() -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    call = parse_chat(
        body(n=3, tools=[TOOL], tool_choice=choice, parallel_tool_calls=False), "chat"
    )
    assert call.params == {
        "n": 3,
        "tools": [TOOL],
        "tool_choice": choice,
        "parallel_tool_calls": False,
    }


@pytest.mark.parametrize(
    ("raw", "status", "param"),
    [
        (b"not json", 400, None),
        (b"[]", 400, None),
        (body(model="other"), 404, "model"),
        (body(temperature="hot"), 400, "temperature"),
        (body(messages=[{"role": "wizard", "content": "x"}]), 400, "messages.0"),
        (body(variables=["x"]), 400, "variables"),
        (body(n="two"), 400, "n"),
        (body(tools="get_weather"), 400, "tools"),
        (body(tools=[{"type": "function", "function": {"description": "x"}}]), 400, "tools.0"),
        (json.dumps({"model": "chat"}).encode(), 400, "messages"),
    ],
)
def test_a_bad_request_is_refused_in_openais_shape(
    raw: bytes, status: int, param: str | None
) -> None:
    with pytest.raises(OpenAIRefusal) as refused:
        parse_chat(raw, "chat")
    error = refused.value.payload()["error"]
    assert refused.value.status == status and set(error) == {"message", "type", "param", "code"}
    assert (error["param"] or "").startswith(param or "") and error["message"]
