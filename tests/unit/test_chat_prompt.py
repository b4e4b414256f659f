"""Chat prompts in the pure domain: messages, variables, rendering, the lint, model_config,
and golden cases that carry the client's messages."""

from __future__ import annotations

import json
from functools import partial

import pytest

from bgserve.errors import InvalidInput
from bgserve.evaluation.chat_prompt import (
    chat_variables,
    check_messages,
    lint_chat,
    render_messages,
)
from bgserve.evaluation.golden import parse_cases, parse_golden_jsonl
from bgserve.evaluation.model_config import MODEL_CONFIG_KEYS, check_model_config

MESSAGES = [
    {"role": "system", "content": "You answer in the style of {{ persona }}."},
    {"role": "user", "content": "{{question}} (asked by {{persona}})"},
]


def error_of(call: object, *args: object) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


def test_variables_are_collected_across_messages_in_order_of_first_use() -> None:
    assert chat_variables(MESSAGES) == ["persona", "question"]


def test_rendering_fills_every_message_and_keeps_the_roles() -> None:
    rendered = render_messages(MESSAGES, {"persona": "a pirate", "question": "Why?"})
    assert rendered == [
        {"role": "system", "content": "You answer in the style of a pirate."},
        {"role": "user", "content": "Why? (asked by a pirate)"},
    ]
    assert error_of(render_messages, MESSAGES, {"persona": "x"}).field == "question"


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ([], "messages", "non-empty list"),
        ("hello", "messages", "non-empty list"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role", "use one of system"),
        ([MESSAGES[0], {"role": "user"}], "messages[1].content", "must be text"),
        ([{"role": "user", "content": "x", "name": "bob"}], "messages[0].name", "unknown key"),
        (["just text"], "messages[0]", "mapping"),
    ],
)
def test_bad_messages_are_refused_naming_the_message(raw: object, field: str, words: str) -> None:
    err = error_of(check_messages, raw)
    assert err.field == field and words in err.message


def test_lint_errors_name_the_variable_and_the_cases_that_cannot_render() -> None:
    cases = parse_cases(
        [
            {"id": "ok", "inputs": {"persona": "p", "question": "q"}},
            {"id": "short", "inputs": {"question": "q", "tone": "dry"}},
        ]
    )
    lint = lint_chat(MESSAGES, cases)
    assert lint.variables == ["persona", "question"]
    assert [(e.variable, e.case_ids) for e in lint.errors] == [("persona", ["short"])]
    assert [w.variable for w in lint.warnings] == ["tone"]
    assert not lint.ok


def test_lint_warns_about_a_late_system_message_and_a_conversation_ending_on_assistant() -> None:
    messages = [*MESSAGES, {"role": "system", "content": "Be brief."}]
    cases = parse_cases(
        [
            {"id": "ends-assistant", "inputs": {"persona": "p", "question": "q"},
             "messages": [{"role": "assistant", "content": "Sure."}]},
            {"id": "ends-user", "inputs": {"persona": "p", "question": "q"},
             "messages": [{"role": "user", "content": "And then?"}]},
        ]
    )  # fmt: skip
    lint = lint_chat(messages, cases)
    assert lint.ok
    texts = [w.message for w in lint.warnings]
    assert any("messages[2] is a system message" in t for t in texts)
    ending = [w for w in lint.warnings if "assistant message in" in w.message]
    assert [w.case_ids for w in ending] == [["ends-assistant"]]


def test_golden_cases_may_carry_messages_and_todays_format_stays_valid() -> None:
    old = json.dumps({"id": "c1", "inputs": {"text": "x"}, "expected": "y"})
    chat = json.dumps(
        {"id": "c2", "inputs": {"q": "x"}, "messages": [{"role": "user", "content": "more"}]}
    )
    first, second = parse_golden_jsonl(old + "\n" + chat)
    assert first.messages is None and first.inputs == {"text": "x"}
    assert second.messages is not None and second.messages[0].content == "more"
    dumped = first.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert "messages" not in dumped


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"role": "robot", "content": "x"}, "line 1.messages[0].role"),
        ({"role": "user", "content": "x", "tool": 1}, "line 1.messages[0].tool"),
    ],
)
def test_bad_case_messages_name_the_line_and_the_field(message: object, field: str) -> None:
    line = json.dumps({"id": "c1", "inputs": {}, "messages": [message]})
    err = error_of(parse_golden_jsonl, line)
    assert err.field == field and "case 'c1'" in err.message


def test_model_config_accepts_the_known_settings_in_range() -> None:
    config = {"temperature": 0, "max_tokens": 64, "top_p": 1, "stop": ["\n\n"], "seed": 7}
    assert check_model_config(config) == config
    assert check_model_config({"stop": "END"}) == {"stop": "END"}
    assert check_model_config(None) == {}
    assert set(MODEL_CONFIG_KEYS) == set(config)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"temprature": 0.2}, "temprature"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 12.5}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"seed": "7"}, "seed"),
    ],
)
def test_model_config_refuses_unknown_keys_and_values_out_of_range_naming_the_key(
    config: dict[str, object], key: str
) -> None:
    err = error_of(check_model_config, config)
    assert err.field == f"model_config.{key}"
    assert f"model_config.{key}" in err.message


def test_a_text_candidate_refuses_cases_with_messages_before_anything_runs() -> None:
    from bgserve.app.comparer import ComparerConfig
    from bgserve.app.prompt_validation import PromptValidator

    settings = ComparerConfig(concurrency=1, timeout_seconds=1, thresholds={}, scorer="text")
    validator = PromptValidator(settings, None, None, None)  # type: ignore[arg-type]
    cases = parse_cases(
        [
            {"id": "plain", "inputs": {"text": "x"}},
            {"id": "chatty", "inputs": {}, "messages": [{"role": "user", "content": "hi"}]},
        ]
    )
    err = error_of(partial(validator.validate, template="Say {{text}}"), "chat", cases)
    assert err.field == "cases[1].messages" and "'chatty'" in err.message
    assert "inline template is a text template" in err.message
