"""Comparison scoring: hand-computed similarities, rates, percentiles and verdict sentences."""

from __future__ import annotations

import json

import pytest

from bgserve.errors import InvalidInput
from bgserve.evaluation.comparison import (
    ComparisonReport,
    ExactScorer,
    Scorer,
    ScorerRegistry,
    SlotResult,
    TextScorer,
    Thresholds,
    compare,
    default_registry,
    percentile,
)
from bgserve.evaluation.golden import GoldenCase, parse_cases


def ok(output: str, latency_ms: float) -> SlotResult:
    return SlotResult(output=output, latency_ms=latency_ms)


def failed(error: str, latency_ms: float = 5.0) -> SlotResult:
    return SlotResult(output=None, latency_ms=latency_ms, error=error)


CASES = parse_cases(
    [
        {
            "id": "c1",
            "inputs": {},
            "expected": "the cat sat",
            "assert": [{"type": "contains", "value": "cat"}],
        },
        {"id": "c2", "inputs": {}, "assert": [{"type": "is_json"}]},
        {"id": "c3", "inputs": {}, "assert": [{"type": "regex", "value": r"^\d+$"}]},
        {"id": "c4", "inputs": {}},
        {"id": "c5", "inputs": {}, "assert": [{"type": "max_latency_ms", "value": 100}]},
    ]
)
BLUE = {
    "c1": ok("the cat sat", 10),
    "c2": ok('{"a": 1}', 20),
    "c3": ok("42", 30),
    "c4": ok("abcd", 40),
    "c5": ok("x", 50),
}
GREEN = {
    "c1": ok("the cat sat", 20),
    "c2": ok('{"a": 1', 40),
    "c3": failed("HTTP 500"),
    "c4": ok("abce", 80),
    "c5": ok("x", 120),
}


def test_text_scorer_is_the_indel_ratio_after_whitespace_normalization() -> None:
    scorer = TextScorer()
    assert scorer.score("abcd", "abce") == 0.75  # 2 * 3 matches / 8 characters
    assert scorer.score("color", "colour") == pytest.approx(10 / 11)
    assert scorer.score(" hello \n\t world ", "hello world") == 1.0
    assert scorer.score("", "") == 1.0
    assert scorer.score("abc", "") == 0.0
    assert ExactScorer().score("a  b", "a b\n") == 1.0
    assert ExactScorer().score("a", "A") == 0.0


def test_percentile_interpolates_between_closest_ranks() -> None:
    assert percentile([40, 10, 30, 20], 0.5) == 25
    assert percentile([10, 20, 30, 40, 50], 0.95) == pytest.approx(48)
    assert percentile([7], 0.95) == 7
    assert percentile([], 0.5) is None


def test_summary_numbers_are_exact() -> None:
    s = compare(CASES, BLUE, GREEN).summary
    assert (s.cases, s.compared, s.exact_matches, s.exact_match_rate) == (5, 4, 2, 0.5)
    # c1 and c5 identical, c2 = 2*7/15, c4 = 2*3/8
    assert s.mean_similarity == pytest.approx((1 + 14 / 15 + 0.75 + 1) / 4)
    assert s.agreement_rate == 0.75
    assert s.differing_cases == ["c4"]
    assert s.regressed_cases == ["c2", "c3", "c5"]
    assert (s.blue.errors, s.blue.error_rate, s.blue.errored_cases) == (0, 0.0, [])
    assert (s.green.errors, s.green.error_rate, s.green.errored_cases) == (1, 0.2, ["c3"])
    assert (s.blue.assertions_passed, s.blue.assertions_total) == (4, 4)
    assert (s.green.assertions_passed, s.green.assertion_pass_rate) == (1, 0.25)
    assert s.blue.latency_p50_ms == 30
    assert s.blue.latency_p95_ms == pytest.approx(48)
    # green's errored c3 is left out of its latencies: [20, 40, 80, 120]
    assert s.green.latency_p50_ms == 60
    assert s.green.latency_p95_ms == pytest.approx(114)
    # both blue percentiles are under the 50 ms floor, so they count as 50 ms
    assert s.latency_ratio_p50 == pytest.approx(1.2)
    assert s.latency_ratio_p95 == pytest.approx(114 / 50)


def test_verdict_lists_every_reason_as_a_sentence() -> None:
    verdict = compare(CASES, BLUE, GREEN).verdict
    assert not verdict.passed
    assert verdict.reasons == [
        "1 of 4 cases differ (similarity below 0.90): c4; agreement rate 0.75 is below 0.80",
        "green failed 1 of 5 cases (error rate 0.20 is above 0.00): c3",
        "green passes 1 of 4 assertions (0.25) against blue's 4 of 4 (1.00), more than 0.00 "
        "worse (difference -0.75 (-0.95 to -0.09 at 95%)); green fails assertions that blue "
        "passes in c2, c3, c5",
    ]


def test_loosened_thresholds_pass_and_limits_are_inclusive() -> None:
    loose = Thresholds().with_overrides(
        {"min_agreement_rate": 0.75, "max_green_error_rate": 0.2, "max_assertion_regression": 0.75}
    )
    report = compare(CASES, BLUE, GREEN, loose)
    assert report.verdict.reasons == []
    assert report.verdict.passed
    assert report.thresholds == loose


def test_latency_ratio_without_the_floor() -> None:
    strict = Thresholds(
        min_latency_ms_for_ratio=0,
        max_latency_ratio_p50=1.5,
        max_green_error_rate=1,
        min_agreement_rate=0,
        max_assertion_regression=1,
    )
    report = compare(CASES, BLUE, GREEN, strict)
    assert report.summary.latency_ratio_p50 == 2.0
    assert report.verdict.reasons == [
        "green p50 latency 60.0 ms is 2.00 times blue's 30.0 ms, above the limit of 1.50"
    ]


def test_the_floor_is_named_when_it_applies() -> None:
    cases = [GoldenCase(id="a", inputs={})]
    report = compare(cases, {"a": ok("x", 2)}, {"a": ok("x", 160)})
    assert report.verdict.reasons == [
        "green p50 latency 160.0 ms is 3.20 times blue's 2.0 ms (latencies under 50 ms count "
        "as 50 ms), above the limit of 2.00",
        "green p95 latency 160.0 ms is 3.20 times blue's 2.0 ms (latencies under 50 ms count "
        "as 50 ms), above the limit of 3.00",
    ]
    jitter = compare(cases, {"a": ok("x", 0.4)}, {"a": ok("x", 1.3)})
    assert jitter.verdict.passed


def test_mean_similarity_reason_shows_enough_digits() -> None:
    cases = [GoldenCase(id="a", inputs={})]
    report = compare(
        cases,
        {"a": ok("abcd", 1)},
        {"a": ok("abce", 1)},
        Thresholds(min_agreement_rate=0, min_mean_similarity=0.7501),
    )
    assert report.verdict.reasons == ["mean similarity 0.7500 is below 0.7501"]


def test_case_report_problems_and_assertion_messages() -> None:
    report = compare(CASES, BLUE, GREEN)
    by_id = {case.id: case for case in report.cases}
    assert by_id["c1"].exact_match and by_id["c1"].similarity == 1.0
    assert by_id["c1"].problems == []
    assert by_id["c3"].similarity is None and not by_id["c3"].differs
    assert by_id["c3"].problems == ["green failed: HTTP 500"]
    assert by_id["c3"].green.assertions[0].message == "no answer: HTTP 500"
    assert by_id["c4"].problems == ["outputs differ: similarity 0.75 is below 0.90"]
    assert by_id["c5"].problems == [
        "green fails assertion 1 (max_latency_ms) which blue passes: "
        "latency 120.0 ms is over 100 ms"
    ]
    assert [c.id for c in report.failing_cases()] == ["c2", "c3", "c4", "c5"]


@pytest.mark.parametrize(
    ("assertion", "output", "passed", "message"),
    [
        ({"type": "equals"}, " Yes\n", True, "output equals 'Yes'"),
        ({"type": "equals", "value": "no"}, "Yes", False, "output 'Yes' is not 'no'"),
        ({"type": "contains", "value": "es"}, "Yes", True, "output contains 'es'"),
        ({"type": "contains", "value": "YES"}, "Yes", False, "output does not contain 'YES'"),
        (
            {"type": "icontains", "value": "YES"},
            "yes!",
            True,
            "output contains 'YES' (ignoring case)",
        ),
        ({"type": "regex", "value": r"\d{2}"}, "a 42 b", True, r"output matches /\d{2}/"),
        ({"type": "regex", "value": r"^\d"}, "a 42", False, r"output does not match /^\d/"),
        ({"type": "is_json"}, ' [1, "a"] ', True, "output is valid JSON"),
        ({"type": "is_json"}, "nope", False, "output is not JSON: Expecting value at column 1"),
        # 2 * 3 matches / 7 characters = 0.857
        (
            {"type": "similar", "threshold": 0.85},
            "Yes",
            True,
            "similarity 0.86 to 'Yes!' reaches 0.85",
        ),
        (
            {"type": "similar", "threshold": 0.858},
            "Yes",
            False,
            "similarity 0.857 to 'Yes!' is below 0.858",
        ),
        ({"type": "max_latency_ms", "value": 10}, "x", True, "latency 10.0 ms is within 10 ms"),
        ({"type": "max_latency_ms", "value": 9.5}, "x", False, "latency 10.0 ms is over 9.5 ms"),
    ],
)
def test_each_assertion_type(
    assertion: dict[str, object], output: str, passed: bool, message: str
) -> None:
    expected = "Yes" if assertion["type"] == "equals" else "Yes!"
    case = parse_cases([{"id": "a", "inputs": {}, "expected": expected, "assert": [assertion]}])
    result = compare(case, {"a": ok(output, 10)}, {"a": ok(output, 10)}).cases[0].green
    assert (result.assertions[0].passed, result.assertions[0].message) == (passed, message)


def test_blue_errors_and_unanswerable_comparisons() -> None:
    cases = [GoldenCase(id="a", inputs={}), GoldenCase(id="b", inputs={})]
    both_failed = {"a": failed("timeout"), "b": SlotResult(output=None, latency_ms=1)}
    report = compare(cases, both_failed, both_failed)
    assert report.cases[1].blue.error == "the slot returned no output"
    assert report.verdict.reasons == [
        "no case was answered by both slots, so their outputs could not be compared",
        "blue failed 2 of 2 cases (error rate 1.00 is above 0.00): a, b",
        "green failed 2 of 2 cases (error rate 1.00 is above 0.00): a, b",
    ]
    assert compare([], {}, {}).verdict.reasons == [
        "the golden set has no cases, so nothing was compared"
    ]


def test_a_missing_result_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="no green result for case 'c1'"):
        compare(CASES[:1], BLUE, {})


def test_min_assertion_pass_rate_is_an_absolute_floor() -> None:
    case = parse_cases([{"id": "a", "inputs": {}, "assert": [{"type": "is_json"}]}])
    report = compare(
        case,
        {"a": ok("x", 1)},
        {"a": ok("x", 1)},
        Thresholds(min_mean_similarity=0, min_assertion_pass_rate=0.5),
    )
    assert report.verdict.reasons == [
        "green passes 0 of 1 assertions (0.00), below the minimum pass rate 0.50"
    ]


def test_threshold_overrides_are_validated() -> None:
    assert Thresholds().with_overrides(None) == Thresholds()
    assert Thresholds().with_overrides({"max_latency_ratio_p95": 5}).max_latency_ratio_p95 == 5
    with pytest.raises(InvalidInput, match="threshold 'min_mean_similarity': Input should be"):
        Thresholds().with_overrides({"min_mean_similarity": 1.5})
    with pytest.raises(InvalidInput, match="threshold 'min_similarity'"):
        Thresholds().with_overrides({"min_similarity": 0.5})


class HalfScorer:
    """A stand-in for an embedding scorer: everything is half similar."""

    name = "half"

    def score(self, a: str, b: str) -> float:
        return 0.5


def test_scorer_registry_plugs_in_an_extra_scorer() -> None:
    registry = default_registry()
    assert registry.names() == ["exact", "text"]
    registry.register("half", HalfScorer)
    scorer: Scorer = registry.get("half")
    report = compare(CASES[3:4], BLUE, GREEN, scorer=scorer)
    assert (report.scorer, report.cases[0].similarity) == ("half", 0.5)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("half", HalfScorer)
    with pytest.raises(InvalidInput) as info:
        ScorerRegistry().get("embedding")
    assert info.value.message == "unknown scorer 'embedding': use one of "
    with pytest.raises(InvalidInput, match="use one of exact, half, text"):
        registry.get("embedding")


def test_report_round_trips_through_json() -> None:
    report = compare(CASES, BLUE, GREEN)
    data = json.loads(json.dumps(report.model_dump(mode="json")))
    assert data["verdict"]["passed"] is False
    assert data["cases"][2]["green"]["error"] == "HTTP 500"
    assert ComparisonReport.model_validate(data) == report


@pytest.mark.usefixtures("mlflow_store")  # MLflow's scorers may touch the tracking store
def test_mlflow_scorer_values_are_read_and_a_failing_scorer_gives_no_value() -> None:
    from mlflow.entities import Feedback
    from mlflow.genai.scorers import scorer

    from bgserve.app.scorers import ScorerSet
    from bgserve.evaluation.scorer_values import as_number

    @scorer
    def verdict_word(outputs: str) -> Feedback:
        return Feedback(value="yes" if "ok" in outputs else "no")

    @scorer
    def broken(outputs: str) -> bool:
        raise RuntimeError("scorer bug")

    assert [as_number(v) for v in (True, 0.25, "Yes", "no", "maybe", None)] == [
        1.0,
        0.25,
        1.0,
        0.0,
        None,
        None,
    ]
    cases = parse_cases([{"id": "a", "inputs": {}, "scorers": ["verdict_word", "broken"]}])
    sides = [{"a": ok("ok then", 1)}, {"a": ok("nope", 1)}]
    scored = ScorerSet({"verdict_word": verdict_word, "broken": broken}).score_all(
        cases, sides, (), 2
    )
    assert scored[0]["a"].scores == {"verdict_word": 1.0, "broken": None}
    assert scored[1]["a"].scores == {"verdict_word": 0.0, "broken": None}
    report = compare(
        cases, scored[0], scored[1], Thresholds(min_mean_similarity=0, min_agreement_rate=0)
    )
    assert report.verdict.reasons == [
        "scorer 'broken' gave no value on any case (it raised or answered no number)",
        "green scores lower than blue on scorer 'verdict_word': mean 0.00 against blue's 1.00 "
        "over 1 cases (difference -1.00 (-1.00 to 0.12 at 95%)), more than 0 worse",
    ]
