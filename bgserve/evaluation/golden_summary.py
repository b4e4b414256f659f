"""The summary of a golden comparison: rates with intervals, latency, tokens, the judge
and the MLflow scorers over all cases. Pure.

Latency per case is the median of its repeated calls when it was probed (a single slow
call on a loaded machine then does not count), else its one call; the p50 and p95 of a
side are taken over those per-case figures.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bgserve.evaluation.case_report import CaseReport, SlotReport
from bgserve.evaluation.confidence import difference_interval, wilson_interval
from bgserve.evaluation.judging import summarize_judgements
from bgserve.evaluation.scorer_values import summarize_scorers
from bgserve.evaluation.tokens import TokenSummary, summarize_tokens
from bgserve.evaluation.verdict import SlotSummary, Summary, Thresholds, percentile

__all__ = ["JudgeSetup", "case_latency", "summarize"]


@dataclass(frozen=True)
class JudgeSetup:
    """Which judge made the judgements, for the summary."""

    model: str
    both_orders: bool


def case_latency(slot: SlotReport) -> float:
    """The latency that stands for this case: the median of its probe, else its one call."""
    return statistics.median(slot.probe_ms) if slot.probe_ms else slot.latency_ms


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _slot_summary(reports: Sequence[CaseReport], role: str, confidence: float) -> SlotSummary:
    slots: list[tuple[str, SlotReport]] = [(case.id, getattr(case, role)) for case in reports]
    errored = [cid for cid, slot in slots if not slot.answered]
    answered = [slot for _, slot in slots if slot.answered]
    latencies = [case_latency(slot) for slot in answered]
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
        assertion_interval=wilson_interval(sum(checks), len(checks), confidence),
        latency_samples=sum(max(1, len(slot.probe_ms)) for slot in answered),
    )


def _ratio(green: float | None, blue: float | None, floor: float) -> float | None:
    if green is None or blue is None:
        return None
    low = max(blue, floor)
    return max(green, floor) / low if low > 0 else None


def _tokens(reports: Sequence[CaseReport], price_per_1k: float | None) -> TokenSummary:
    both = [case for case in reports if case.blue.answered and case.green.answered]
    blue = [case.blue.output_tokens or 0 for case in both]
    green = [case.green.output_tokens or 0 for case in both]
    approximate = any(not slot.tokens_reported for case in both for slot in (case.blue, case.green))
    return summarize_tokens(blue, green, approximate, price_per_1k)


def summarize(
    reports: Sequence[CaseReport],
    thresholds: Thresholds,
    judge: JudgeSetup | None = None,
    price_per_1k: float | None = None,
) -> Summary:
    """The numbers the verdict is decided on."""
    confidence = thresholds.report_confidence
    scored = [case for case in reports if case.similarity is not None]
    similarities = [case.similarity for case in scored if case.similarity is not None]
    blue = _slot_summary(reports, "blue", confidence)
    green = _slot_summary(reports, "green", confidence)
    floor = thresholds.min_latency_ms_for_ratio
    exact = sum(case.exact_match for case in scored)
    judged = [case.judge for case in reports if case.judge is not None]
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
        confidence=confidence,
        assertion_difference=difference_interval(green.assertion_interval, blue.assertion_interval),
        tokens=_tokens(reports, price_per_1k),
        judge=None
        if judge is None
        else summarize_judgements(judged, judge.model, judge.both_orders, confidence),
        scorers=summarize_scorers(
            [case.blue.scores for case in reports],
            [case.green.scores for case in reports],
            confidence,
        ),
    )
