"""Blue against green on a golden set: scorers, assertions, summary and verdict. Pure.

The service sends every case to each slot directly and hands the answers here as
:class:`SlotResult` values; :func:`compare` scores them and decides. Similarity and
agreement are measured over the cases both slots answered; an error counts in that
slot's error rate and fails all of its assertions for the case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from bgserve.domain.assertions import Answer, AssertionResult, check_assertion, clamp_score
from bgserve.domain.case_report import CaseReport, SlotReport, SlotResult
from bgserve.domain.golden import GoldenCase
from bgserve.domain.golden_summary import JudgeSetup, summarize
from bgserve.domain.judging import Judgement
from bgserve.domain.response_schema import SchemaSides, check_schemas, schema_reason
from bgserve.domain.scorers import (
    ExactScorer,
    Scorer,
    ScorerRegistry,
    TextScorer,
    default_registry,
    normalize_text,
)
from bgserve.domain.tokens import approximate_tokens
from bgserve.domain.verdict import (
    Rate,
    Ratio,
    SlotSummary,
    Summary,
    Thresholds,
    Verdict,
    format_pair,
    percentile,
    verdict_reasons,
)
from bgserve.domain.verdict_quality import outcome_of, quality_reasons

__all__ = [
    "AssertionResult",
    "CaseReport",
    "ComparisonReport",
    "ExactScorer",
    "JudgeSetup",
    "LoggedRun",
    "Rate",
    "Ratio",
    "Scorer",
    "ScorerRegistry",
    "SlotReport",
    "SlotResult",
    "SlotSummary",
    "Summary",
    "TextScorer",
    "Thresholds",
    "Verdict",
    "compare",
    "default_registry",
    "normalize_text",
    "percentile",
]

# --- per case --------------------------------------------------------------------------


def _slot_report(case: GoldenCase, result: SlotResult, scorer: Scorer) -> SlotReport:
    error = result.error
    if error is None and result.output is None:
        error = "the slot returned no output"
    if error is not None:
        failed = [
            AssertionResult(type=a.type, passed=False, message=f"no answer: {error}")
            for a in case.assertions
        ]
        return SlotReport(
            output=None,
            latency_ms=result.latency_ms,
            error=error,
            assertions=failed,
            probe_ms=list(result.probe_ms),
            scores=result.scores,
        )
    answer = Answer(result.output or "", result.latency_ms, case.expected, scorer)
    checked = [check_assertion(a, answer) for a in case.assertions]
    reported = result.output_tokens is not None
    return SlotReport(
        output=answer.output,
        latency_ms=answer.latency_ms,
        error=None,
        assertions=checked,
        output_tokens=result.output_tokens if reported else approximate_tokens(answer.output),
        tokens_reported=reported,
        probe_ms=list(result.probe_ms),
        scores=result.scores,
    )


def _case_report(
    case: GoldenCase,
    blue_result: SlotResult,
    green_result: SlotResult,
    thresholds: Thresholds,
    scorer: Scorer,
    judgement: Judgement | None,
) -> CaseReport:
    blue = _slot_report(case, blue_result, scorer)
    green = _slot_report(case, green_result, scorer)
    exact = blue.answered and green.answered and blue.output == green.output
    similarity = None
    if blue.answered and green.answered:
        similarity = (
            1.0 if exact else clamp_score(scorer.score(blue.output or "", green.output or ""))
        )
    differs = similarity is not None and similarity < thresholds.agreement_similarity
    regressed = any(
        b.passed and not g.passed for b, g in zip(blue.assertions, green.assertions, strict=True)
    )
    return CaseReport(
        id=case.id,
        inputs=case.inputs,
        expected=case.expected,
        blue=blue,
        green=green,
        exact_match=exact,
        similarity=similarity,
        differs=differs,
        regressed=regressed,
        problems=_problems(blue, green, similarity, differs, thresholds)
        + _judge_problems(judgement),
        judge=judgement,
    )


def _judge_problems(judgement: Judgement | None) -> list[str]:
    if judgement is None or judgement.outcome in ("win", "tie"):
        return []
    if judgement.outcome == "error":
        return [f"the judge failed: {judgement.error}"]
    return ["the judge prefers blue's answer (" + "; ".join(judgement.orders) + ")"]


def _problems(
    blue: SlotReport,
    green: SlotReport,
    similarity: float | None,
    differs: bool,
    thresholds: Thresholds,
) -> list[str]:
    problems = [
        f"{role} failed: {slot.error}"
        for role, slot in (("blue", blue), ("green", green))
        if not slot.answered
    ]
    if differs and similarity is not None:
        problems.append(
            "outputs differ: similarity {} is below {}".format(
                *format_pair(similarity, thresholds.agreement_similarity)
            )
        )
    for number, (b, g) in enumerate(zip(blue.assertions, green.assertions, strict=True), 1):
        if b.passed and not g.passed and green.answered:
            problems.append(
                f"green fails assertion {number} ({g.type}) which blue passes: {g.message}"
            )
        elif not b.passed and not g.passed and blue.answered and green.answered:
            problems.append(f"both slots fail assertion {number} ({g.type}): {g.message}")
    return problems


# --- report and verdict ----------------------------------------------------------------


class LoggedRun(BaseModel):
    """Where the comparison was logged in MLflow, or why logging failed (``error``)."""

    run_id: str | None = None
    experiment_id: str | None = None
    experiment: str | None = None
    url: str | None = None
    error: str | None = None


class ComparisonReport(BaseModel):
    """Everything a comparison found; JSON-serializable with ``model_dump(mode="json")``.

    ``outcome`` is ``passed``, ``failed``, or ``inconclusive`` when the only reasons are
    that the cases are too few to show a threshold is met (it does not pass the gate).
    """

    scorer: str
    thresholds: Thresholds
    summary: Summary
    verdict: Verdict
    cases: list[CaseReport]
    outcome: str = "passed"
    mlflow: LoggedRun | None = None

    def failing_cases(self) -> list[CaseReport]:
        """The cases with at least one problem, in golden-set order."""
        return [case for case in self.cases if case.failing]


def _result(results: Mapping[str, SlotResult], case_id: str, role: str) -> SlotResult:
    if case_id not in results:
        raise ValueError(f"no {role} result for case {case_id!r}")
    return results[case_id]


def compare(
    cases: Sequence[GoldenCase],
    blue_results: Mapping[str, SlotResult],
    green_results: Mapping[str, SlotResult],
    thresholds: Thresholds | None = None,
    scorer: Scorer | None = None,
    *,
    judgements: Mapping[str, Judgement] | None = None,
    judge: JudgeSetup | None = None,
    price_per_1k_tokens: float | None = None,
    schemas: SchemaSides | None = None,
) -> ComparisonReport:
    """Score green against blue on ``cases``; the results are keyed by case id.

    ``judgements`` are the pairwise judge's outcomes by case id, made by ``judge``;
    ``schemas`` the response_format of each side's prompt, its answers are checked on.

    Raises:
        ValueError: a case has no result for a slot (a bug in the caller).
    """
    thresholds = thresholds or Thresholds()
    scorer = scorer or TextScorer()
    reports = [
        _case_report(
            case,
            _result(blue_results, case.id, "blue"),
            _result(green_results, case.id, "green"),
            thresholds,
            scorer,
            None if judgements is None else judgements.get(case.id),
        )
        for case in cases
    ]
    summary = summarize(reports, thresholds, judge, price_per_1k_tokens)
    if schemas is not None:
        summary.schema_valid = check_schemas(reports, schemas, thresholds.report_confidence)
    reasons = verdict_reasons(summary, thresholds) + quality_reasons(summary, thresholds)
    limit = thresholds.min_schema_valid_rate
    found = schema_reason(summary.schema_valid, limit, thresholds.confidence)
    reasons += [found] if found is not None else []
    return ComparisonReport(
        scorer=scorer.name,
        thresholds=thresholds,
        summary=summary,
        verdict=Verdict(passed=not reasons, reasons=reasons),
        cases=reports,
        outcome=outcome_of(reasons),
    )
