"""A chat prompt's response_format in comparisons: the schema check, the schema-valid rate
of each side, and the verdict with min_schema_valid_rate."""

from __future__ import annotations

import json

import pytest

from bgserve.domain.comparison import SlotResult, Thresholds, compare
from bgserve.domain.golden import parse_cases
from bgserve.domain.response_schema import ResponseSchema, SchemaSides, check_response_schema
from bgserve.errors import InvalidInput

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["answer"],
    "additionalProperties": False,
}
CASES = parse_cases([{"id": f"c{i}", "inputs": {}} for i in range(1, 11)])


def ok(value: object) -> SlotResult:
    text = value if isinstance(value, str) else json.dumps(value)
    return SlotResult(output=text, latency_ms=10.0)


def answers(valid: int, *, failed: int = 0) -> dict[str, SlotResult]:
    """``valid`` schema-valid answers, then ``failed`` errors, then invalid ones."""
    results: dict[str, SlotResult] = {}
    for index, case in enumerate(CASES):
        if index < valid:
            results[case.id] = ok({"answer": "yes"})
        elif index < valid + failed:
            results[case.id] = SlotResult(output=None, latency_ms=5.0, error="HTTP 500")
        else:
            results[case.id] = ok({"answer": 42})
    return results


def loose() -> Thresholds:
    """Only the schema gate matters in these tests."""
    return Thresholds(
        min_mean_similarity=0, min_agreement_rate=0, max_blue_error_rate=1, max_green_error_rate=1
    )


def test_a_valid_schema_passes_and_a_broken_one_is_named() -> None:
    assert check_response_schema(SCHEMA) == SCHEMA
    with pytest.raises(InvalidInput) as caught:
        check_response_schema({"type": "object", "properties": {"a": {"type": "strang"}}})
    assert caught.value.field == "response_format"
    assert "['properties']['a']['type']" in caught.value.message
    with pytest.raises(InvalidInput, match="wrapper"):
        check_response_schema({"type": "json_schema", "json_schema": {"schema": SCHEMA}})
    with pytest.raises(InvalidInput, match="must be a JSON schema"):
        check_response_schema(["type", "object"])


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ('  {"answer": "yes", "confidence": 0.5}\n', None),
        ('{"answer": 3}', "at $.answer: 3 is not of type 'string'"),
        ('{"confidence": 1}', "at the answer: 'answer' is a required property"),
        ("Sure! Here it is", "not JSON"),
        ('```json\n{"answer": "yes"}\n```', "not JSON"),
    ],
)
def test_answers_are_checked_as_strict_json_against_the_schema(
    answer: str, problem: str | None
) -> None:
    found = ResponseSchema(SCHEMA).problem(answer)
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


def test_schema_valid_rate_per_side_counts_answered_cases_only() -> None:
    sides = SchemaSides(ResponseSchema(SCHEMA), ResponseSchema(SCHEMA))
    report = compare(CASES, answers(10), answers(6, failed=2), loose(), schemas=sides)
    schema = report.summary.schema_valid
    assert schema is not None and schema.blue is not None and schema.green is not None
    assert (schema.blue.valid, schema.blue.checked, schema.blue.rate) == (10, 10, 1.0)
    assert (schema.green.valid, schema.green.checked) == (6, 8)
    assert schema.green.rate == pytest.approx(0.75)
    assert schema.green.invalid_cases == ["c9", "c10"]
    case = {c.id: c for c in report.cases}
    assert case["c9"].green.schema_problem is not None and case["c9"].green.schema_checked
    assert any(
        "green's answer does not match its response_format" in p for p in case["c9"].problems
    )
    assert not case["c7"].green.schema_checked  # failed call: counted as an error, not here


def test_green_below_the_minimum_fails_the_verdict_naming_the_cases() -> None:
    sides = SchemaSides(ResponseSchema(SCHEMA), ResponseSchema(SCHEMA))
    report = compare(CASES, answers(10), answers(8), loose(), schemas=sides)
    assert not report.verdict.passed
    [reason] = [r for r in report.verdict.reasons if "response_format" in r]
    assert "8 of 10" in reason and "0.80" in reason and "0.90" in reason
    assert "c9, c10" in reason
    lowered = loose().with_overrides({"min_schema_valid_rate": 0.8})
    assert compare(CASES, answers(10), answers(8), lowered, schemas=sides).verdict.passed


def test_with_confidence_a_rate_that_clears_only_on_its_estimate_is_inconclusive() -> None:
    sides = SchemaSides(None, ResponseSchema(SCHEMA))
    limits = loose().with_overrides({"confidence": 0.95})
    report = compare(CASES, answers(10), answers(10), limits, schemas=sides)
    assert report.outcome == "inconclusive"
    assert report.verdict.reasons[0].startswith("inconclusive: 10 of 10")


def test_only_sides_with_a_schema_are_checked_and_blue_never_gates() -> None:
    blue_only = SchemaSides(ResponseSchema(SCHEMA), None)
    report = compare(CASES, answers(0), answers(0), loose(), schemas=blue_only)
    schema = report.summary.schema_valid
    assert schema is not None and schema.green is None
    assert schema.blue is not None and schema.blue.rate == 0.0
    assert report.verdict.passed
    plain = compare(CASES, answers(0), answers(0), loose())
    assert plain.summary.schema_valid is None and plain.verdict.passed
    assert Thresholds().min_schema_valid_rate == 0.9


def test_the_html_report_and_the_json_show_the_rates_and_each_answers_check() -> None:
    from bgserve.report_html import render_html

    sides = SchemaSides(ResponseSchema(SCHEMA), ResponseSchema(SCHEMA))
    report = compare(CASES, answers(10), answers(8), loose(), schemas=sides)
    page = render_html(report, "qa")
    assert "schema-valid blue" in page and "10 of 10 valid" in page
    assert "schema-valid green" in page and "8 of 10 valid" in page and "invalid: c9, c10" in page
    assert "response_format: at $.answer: 42 is not of type" in page
    body = json.loads(report.model_dump_json())
    assert body["summary"]["schema_valid"]["green"]["invalid_cases"] == ["c9", "c10"]
    assert body["thresholds"]["min_schema_valid_rate"] == 0.9
