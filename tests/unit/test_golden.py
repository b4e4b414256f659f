"""Golden sets: parsing, validation messages, size limits and the template lint."""

from __future__ import annotations

import json

import pytest

from bgserve.domain.golden import (
    KNOWN_ASSERTION_TYPES,
    GoldenCase,
    check_inputs,
    lint_template,
    parse_cases,
    parse_golden_jsonl,
)
from bgserve.errors import InvalidInput, PayloadTooLarge


def line(case_id: str = "c1", **fields: object) -> str:
    body: dict[str, object] = {"id": case_id, "inputs": {"text": "hi"}, **fields}
    return json.dumps(body)


def error_of(text: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_golden_jsonl(text)
    return info.value


def test_parses_every_assertion_type_and_skips_blank_lines() -> None:
    asserts = [
        {"type": "equals", "value": "x"},
        {"type": "contains", "value": "x"},
        {"type": "icontains", "value": "X"},
        {"type": "regex", "value": "^x+$"},
        {"type": "is_json"},
        {"type": "similar", "threshold": 0.5},
        {"type": "max_latency_ms", "value": 250},
    ]
    text = "\ufeff" + line("c1", expected="x", **{"assert": asserts}) + "\r\n\n  \n" + line("c2")
    cases = parse_golden_jsonl(text)
    assert [c.id for c in cases] == ["c1", "c2"]
    assert sorted(a.type for a in cases[0].assertions) == list(KNOWN_ASSERTION_TYPES)
    assert cases[0].assertions[6].value == 250.0
    assert cases[1].assertions == ()


def test_a_line_separator_inside_a_json_string_does_not_split_the_case() -> None:
    cases = parse_golden_jsonl(line("c1", expected="a\u2028b"))
    assert cases[0].expected == "a\u2028b"


def test_unknown_assertion_type_names_line_case_and_known_types() -> None:
    text = line("c1") + "\n" + line("c2", **{"assert": [{"type": "startswith", "value": "a"}]})
    err = error_of(text)
    assert not isinstance(err, PayloadTooLarge)
    assert err.message == (
        "golden set line 2 (case 'c2'): assert[0].type: unknown assertion type 'startswith': "
        "use one of contains, equals, icontains, is_json, max_latency_ms, regex, similar"
    )
    assert err.field == "line 2.assert[0].type"


def test_regex_must_compile_at_parse_time() -> None:
    err = error_of(line("r1", **{"assert": [{"type": "regex", "value": "(unclosed"}]}))
    assert err.message.startswith(
        "golden set line 1 (case 'r1'): assert[0].value: regex '(unclosed' does not compile: "
        "missing ):"
    )
    assert err.field == "line 1.assert[0].value"


@pytest.mark.parametrize("threshold", [None, -0.1, 1.5])
def test_similar_needs_a_threshold_between_0_and_1(threshold: float | None) -> None:
    item = {"type": "similar", "value": "x", "threshold": threshold}
    err = error_of(line("s1", **{"assert": [item]}))
    assert err.message == (
        "golden set line 1 (case 's1'): assert[0]: similar needs a 'threshold' between 0 and 1"
    )


def test_equals_and_similar_fall_back_to_expected() -> None:
    case = parse_golden_jsonl(line("e1", expected="yes", **{"assert": [{"type": "equals"}]}))[0]
    assert case.assertions[0].target(case.expected) == "yes"
    err = error_of(line("e2", **{"assert": [{"type": "equals"}]}))
    assert err.message == (
        "golden set line 1 (case 'e2'): assert[0]: equals needs a 'value' or the case's 'expected'"
    )


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({"type": "contains"}, "contains needs a non-empty string 'value'"),
        ({"type": "contains", "value": 3}, "contains needs a string 'value', got the number 3"),
        ({"type": "is_json", "value": "x"}, "is_json takes no 'value'"),
        ({"type": "regex", "value": "a", "threshold": 0.5}, "regex takes no 'threshold'"),
        (
            {"type": "max_latency_ms", "value": "100"},
            "max_latency_ms needs a positive number of milliseconds as 'value'",
        ),
        (
            {"type": "max_latency_ms", "value": 0},
            "max_latency_ms needs a positive number of milliseconds as 'value'",
        ),
    ],
)
def test_assertion_fields_must_fit_the_type(item: dict[str, object], problem: str) -> None:
    err = error_of(line("a1", **{"assert": [item]}))
    assert err.message == f"golden set line 1 (case 'a1'): assert[0]: {problem}"


def test_booleans_are_not_numbers() -> None:
    err = error_of(line("b1", **{"assert": [{"type": "max_latency_ms", "value": True}]}))
    assert "assert[0].value: must be a string or a number, not true/false" in err.message


def test_unknown_and_missing_fields_are_named() -> None:
    assert error_of(line("u1", asserts=[])).message == (
        "golden set line 1 (case 'u1'): unknown field 'asserts': "
        "use id, inputs, messages, expected, assert, scorers, description"
    )
    assert error_of('{"inputs": {}}').message == "golden set line 1: 'id' is required"
    assert error_of(json.dumps({"id": "n1", "inputs": {"n": 3}})).message == (
        "golden set line 1 (case 'n1'): inputs.n: Input should be a valid string"
    )


def test_duplicate_ids_name_both_lines() -> None:
    err = error_of(line("c1") + "\n" + line("c2") + "\n\n" + line("c1"))
    assert err.message == (
        "golden set line 4 (case 'c1'): duplicate case id 'c1', first used at line 1"
    )


def test_bad_json_and_non_objects_name_the_line() -> None:
    assert error_of(line() + '\n{"id": "c2",').message.startswith(
        "golden set line 2 is not valid JSON: "
    )
    assert error_of("[1, 2]").message == "golden set line 1 must be a JSON object, got list"


def test_an_empty_golden_set_is_refused() -> None:
    assert error_of("\n  \n").message == "the golden set has no cases: add at least one"


def test_too_many_cases_is_payload_too_large() -> None:
    text = "\n".join(line(f"c{i}") for i in range(4))
    with pytest.raises(PayloadTooLarge) as info:
        parse_golden_jsonl(text, max_cases=3)
    assert info.value.message == "the golden set has 4 cases; the limit is 3"


def test_an_oversized_line_is_payload_too_large() -> None:
    text = line("c1") + "\n" + line("c2", expected="x" * 200)
    with pytest.raises(PayloadTooLarge) as info:
        parse_golden_jsonl(text, max_case_bytes=100)
    size = len(line("c2", expected="x" * 200).encode())
    assert info.value.message == (
        f"golden set line 2 is {size} bytes; the limit is 100 bytes a case"
    )


def test_inline_cases_use_the_same_rules_with_list_indexes() -> None:
    raw: list[object] = [
        {"id": "a", "inputs": {}},
        {"id": "b", "inputs": {}, "assert": [{"type": "nope"}]},
    ]
    with pytest.raises(InvalidInput) as info:
        parse_cases(raw)
    assert info.value.message.startswith(
        "golden set cases[1] (case 'b'): assert[0].type: unknown assertion type 'nope'"
    )
    assert [c.id for c in parse_cases(raw[:1])] == ["a"]


def test_inline_limits() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        parse_cases([{"id": "big", "inputs": {"text": "x" * 500}}], max_case_bytes=100)
    assert info.value.message.startswith("cases[0] (case 'big') is ")
    with pytest.raises(PayloadTooLarge):
        parse_cases([{"id": str(i), "inputs": {}} for i in range(3)], max_cases=2)
    with pytest.raises(InvalidInput, match="must be a JSON object, got str"):
        parse_cases(["c1"])


def test_check_inputs_names_each_case_and_variable() -> None:
    cases = [
        GoldenCase(id="c1", inputs={"text": "a", "lang": "en"}),
        GoldenCase(id="c2", inputs={"lang": "en"}),
        GoldenCase(id="c3", inputs={}),
    ]
    check_inputs(cases[:1], ["text", "lang"])
    with pytest.raises(InvalidInput) as info:
        check_inputs(cases, ["text", "lang"])
    assert info.value.message == (
        "golden set does not provide every template variable: case 'c2' lacks input 'text'; "
        "case 'c3' lacks input 'text', 'lang'"
    )
    assert info.value.details == {"missing": {"c2": ["text"], "c3": ["text", "lang"]}}


def test_lint_reports_missing_as_errors_and_unused_as_warnings() -> None:
    cases = [
        GoldenCase(id="c1", inputs={"text": "a", "tone": "dry"}),
        GoldenCase(id="c2", inputs={"extra": "x"}),
    ]
    report = lint_template(["text"], cases)
    assert not report.ok
    assert [(e.variable, e.case_ids) for e in report.errors] == [("text", ["c2"])]
    assert report.errors[0].message == (
        "template variable 'text' is not provided by 1 of 2 cases, which cannot render: c2"
    )
    assert [(w.variable, w.case_ids) for w in report.warnings] == [
        ("extra", ["c2"]),
        ("tone", ["c1"]),
    ]
    assert report.warnings[1].message == (
        "input 'tone' is provided by 1 of 2 cases but the template does not use it"
    )
    assert lint_template(["text"], cases[:1]).errors == []
