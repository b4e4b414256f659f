"""Wilson and Newcombe intervals, and verdicts that gate on an interval's bound."""

from __future__ import annotations

import pytest

from bgserve.evaluation.comparison import SlotResult, Thresholds, compare
from bgserve.evaluation.confidence import difference_interval, wilson_interval, z_value
from bgserve.evaluation.golden import GoldenCase, parse_cases


def test_wilson_matches_published_values() -> None:
    # Newcombe (1998), table I: 81 of 263 -> 0.2553 to 0.3662 at 95%.
    interval = wilson_interval(81, 263, 0.95)
    assert interval is not None
    assert [interval.low, interval.high] == pytest.approx([0.2553, 0.3662], abs=1e-4)
    full = wilson_interval(8, 8, 0.95)
    assert full is not None and full.high == 1.0 and full.low == pytest.approx(0.6756, abs=1e-4)
    assert wilson_interval(0, 0, 0.95) is None
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)


def test_newcombe_difference_matches_the_published_example() -> None:
    # Newcombe (1998), table II example (56/70 against 48/80): 0.0524 to 0.3339.
    diff = difference_interval(wilson_interval(56, 70, 0.95), wilson_interval(48, 80, 0.95))
    assert diff is not None
    assert diff.estimate == pytest.approx(0.2)
    assert [diff.low, diff.high] == pytest.approx([0.0524, 0.3339], abs=1e-4)


def _cases(n: int) -> list[GoldenCase]:
    return parse_cases(
        [
            {"id": f"c{i}", "inputs": {}, "assert": [{"type": "contains", "value": "ok"}]}
            for i in range(n)
        ]
    )


def _answers(cases: list[GoldenCase], failing: int = 0) -> dict[str, SlotResult]:
    return {
        c.id: SlotResult(output="nope" if i < failing else "ok", latency_ms=1.0)
        for i, c in enumerate(cases)
    }


def test_few_cases_are_inconclusive_and_many_pass_at_95_percent() -> None:
    limits = Thresholds(confidence=0.95, max_assertion_regression=0.02)
    few = _cases(8)
    report = compare(few, _answers(few), _answers(few), limits)
    assert report.outcome == "inconclusive" and not report.verdict.passed
    (reason,) = report.verdict.reasons
    assert reason.startswith("inconclusive: 8 assertion checks cannot show a 2-point difference")
    many = _cases(400)
    assert (
        compare(
            many,
            _answers(many),
            _answers(many),
            limits.model_copy(update={"max_assertion_regression": 0.05}),
        ).outcome
        == "passed"
    )


def test_a_clear_regression_fails_rather_than_being_inconclusive() -> None:
    cases = _cases(40)
    limits = Thresholds(
        confidence=0.95, max_assertion_regression=0.02, min_mean_similarity=0, min_agreement_rate=0
    )
    report = compare(cases, _answers(cases), _answers(cases, failing=10), limits)
    assert report.outcome == "failed"
    (reason,) = report.verdict.reasons
    assert "more than 0.02 worse (difference -0.25 (-0.40 to -0.11 at 95%))" in reason


def test_without_confidence_the_point_estimate_decides() -> None:
    few = _cases(8)
    report = compare(few, _answers(few), _answers(few))
    assert report.outcome == "passed"
    assert report.summary.assertion_difference is not None
    assert report.summary.assertion_difference.low < 0 < report.summary.assertion_difference.high


def test_judge_win_rate_gates_on_its_lower_bound_with_confidence() -> None:
    from bgserve.evaluation.comparison import JudgeSetup
    from bgserve.evaluation.judging import combine

    cases = [GoldenCase(id=f"c{i}", inputs={}) for i in range(10)]
    wins = {c.id: combine([(True, "A")]) for c in cases[:7]}
    losses = {c.id: combine([(True, "B")]) for c in cases[7:]}
    judged = {**wins, **losses}
    setup = JudgeSetup("m", False)
    point = compare(
        cases,
        _answers(cases),
        _answers(cases),
        Thresholds(min_judge_win_rate=0.5),
        judgements=judged,
        judge=setup,
    )
    assert point.verdict.passed
    bound = compare(
        cases,
        _answers(cases),
        _answers(cases),
        Thresholds(min_judge_win_rate=0.5, confidence=0.95),
        judgements=judged,
        judge=setup,
    )
    assert bound.outcome == "inconclusive"
    assert "10 judged cases cannot show a win rate of 0.50" in bound.verdict.reasons[0]
