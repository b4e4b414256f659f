"""Blue against green on a golden set: scorers, assertions, summary and verdict. Pure.

The service sends every case to each slot directly and hands the answers here as
:class:`SlotResult` values; :func:`compare` scores them and decides. Similarity and
agreement are measured over the cases both slots answered; an error counts in that
slot's error rate and fails all of its assertions for the case.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from bgserve.domain.assertions import Answer, AssertionResult, check_assertion, clamp_score
from bgserve.domain.golden import GoldenCase
from bgserve.domain.scorers import (
    ExactScorer,
    Scorer,
    ScorerRegistry,
    TextScorer,
    default_registry,
    normalize_text,
)
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

__all__ = [
    "AssertionResult",
    "CaseReport",
    "ComparisonReport",
    "ExactScorer",
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


class SlotResult(BaseModel):
    """What one slot answered to one case; ``error`` set means no usable answer."""

    output: str | None = None
    latency_ms: float = Field(ge=0)
    error: str | None = None


class SlotReport(BaseModel):
    """One slot's answer to a case and its assertion results."""

    output: str | None
    latency_ms: float
    error: str | None
    assertions: list[AssertionResult]

    @property
    def answered(self) -> bool:
        """True when the slot gave an output (an empty one counts) without error."""
        return self.error is None


class CaseReport(BaseModel):
    """One case, both answers, how they compare, and what is wrong (``problems``)."""

    id: str
    inputs: dict[str, str]
    expected: str | None
    blue: SlotReport
    green: SlotReport
    exact_match: bool
    similarity: float | None
    differs: bool
    regressed: bool
    problems: list[str]

    @property
    def failing(self) -> bool:
        """True when the case has at least one problem; such cases are shown first."""
        return bool(self.problems)


def _slot_report(case: GoldenCase, result: SlotResult, scorer: Scorer) -> SlotReport:
    error = result.error
    if error is None and result.output is None:
        error = "the slot returned no output"
    if error is not None:
        failed = [
            AssertionResult(type=a.type, passed=False, message=f"no answer: {error}")
            for a in case.assertions
        ]
        return SlotReport(output=None, latency_ms=result.latency_ms, error=error, assertions=failed)
    answer = Answer(result.output or "", result.latency_ms, case.expected, scorer)
    checked = [check_assertion(a, answer) for a in case.assertions]
    return SlotReport(
        output=answer.output, latency_ms=answer.latency_ms, error=None, assertions=checked
    )


def _case_report(
    case: GoldenCase,
    blue_result: SlotResult,
    green_result: SlotResult,
    thresholds: Thresholds,
    scorer: Scorer,
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
        problems=_problems(blue, green, similarity, differs, thresholds),
    )


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


# --- summary and verdict ---------------------------------------------------------------


class ComparisonReport(BaseModel):
    """Everything a comparison found; JSON-serializable with ``model_dump(mode="json")``."""

    scorer: str
    thresholds: Thresholds
    summary: Summary
    verdict: Verdict
    cases: list[CaseReport]

    def failing_cases(self) -> list[CaseReport]:
        """The cases with at least one problem, in golden-set order."""
        return [case for case in self.cases if case.failing]


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _slot_summary(reports: Sequence[CaseReport], role: str) -> SlotSummary:
    slots = [(case.id, getattr(case, role)) for case in reports]
    errored = [cid for cid, slot in slots if not slot.answered]
    latencies = [slot.latency_ms for _, slot in slots if slot.answered]
    checks = [a.passed for _, slot in slots for a in slot.assertions]
    return SlotSummary(
        errors=len(errored),
        error_rate=_rate(len(errored), len(slots)) or 0.0,
        errored_cases=errored,
        assertions_passed=sum(checks),
        assertions_total=len(checks),
        assertion_pass_rate=_rate(sum(checks), len(checks)),
        latency_p50_ms=percentile(latencies, 0.5),
        latency_p95_ms=percentile(latencies, 0.95),
    )


def _ratio(green: float | None, blue: float | None, floor: float) -> float | None:
    if green is None or blue is None:
        return None
    low = max(blue, floor)
    return max(green, floor) / low if low > 0 else None


def _summarize(reports: Sequence[CaseReport], thresholds: Thresholds) -> Summary:
    scored = [case for case in reports if case.similarity is not None]
    similarities = [case.similarity for case in scored if case.similarity is not None]
    blue, green = _slot_summary(reports, "blue"), _slot_summary(reports, "green")
    floor = thresholds.min_latency_ms_for_ratio
    exact = sum(case.exact_match for case in scored)
    return Summary(
        cases=len(reports),
        compared=len(scored),
        exact_matches=exact,
        exact_match_rate=_rate(exact, len(scored)),
        mean_similarity=sum(similarities) / len(similarities) if similarities else None,
        agreement_rate=_rate(sum(not case.differs for case in scored), len(scored)),
        differing_cases=[case.id for case in scored if case.differs],
        regressed_cases=[case.id for case in reports if case.regressed],
        blue=blue,
        green=green,
        latency_ratio_p50=_ratio(green.latency_p50_ms, blue.latency_p50_ms, floor),
        latency_ratio_p95=_ratio(green.latency_p95_ms, blue.latency_p95_ms, floor),
    )


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
) -> ComparisonReport:
    """Score green against blue on ``cases``; the results are keyed by case id.

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
        )
        for case in cases
    ]
    summary = _summarize(reports, thresholds)
    reasons = verdict_reasons(summary, thresholds)
    return ComparisonReport(
        scorer=scorer.name,
        thresholds=thresholds,
        summary=summary,
        verdict=Verdict(passed=not reasons, reasons=reasons),
        cases=reports,
    )
