"""Thresholds, the summary of a comparison, and the verdict's reasons. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bgserve.errors import InvalidInput
from bgserve.evaluation.confidence import Interval
from bgserve.evaluation.judging import JudgeSummary
from bgserve.evaluation.schema_rates import SchemaSummary
from bgserve.evaluation.scorer_values import ScorerSummary
from bgserve.evaluation.tokens import TokenSummary

__all__ = [
    "LOOSER_WHEN",
    "Rate",
    "Ratio",
    "SlotSummary",
    "Summary",
    "Thresholds",
    "Verdict",
    "format_pair",
    "percentile",
    "verdict_reasons",
]

# --- thresholds ------------------------------------------------------------------------


Rate = Annotated[float, Field(ge=0, le=1)]
Ratio = Annotated[float, Field(gt=0)]


class Thresholds(BaseModel):
    """What green must achieve against blue to pass. Every limit is inclusive."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    min_mean_similarity: Rate = 0.9
    """Mean blue/green similarity over the cases both slots answered."""
    agreement_similarity: Rate = 0.9
    """A case agrees when its similarity reaches this; below it, the case differs."""
    min_agreement_rate: Rate = 0.8
    """Share of the cases both answered that must agree."""
    max_blue_error_rate: Rate = 0.0
    """Share of cases blue may fail; raise it when green is the fix for blue's errors."""
    max_green_error_rate: Rate = 0.0
    """Share of cases green may fail."""
    max_assertion_regression: Rate = 0.0
    """How far green's assertion pass rate may fall below blue's."""
    min_assertion_pass_rate: Rate = 0.0
    """Green's absolute floor; 0 because by default green is judged against blue."""
    max_latency_ratio_p50: Ratio = 2.0
    """Green p50 latency over blue's."""
    max_latency_ratio_p95: Ratio = 3.0
    """Green p95 latency over blue's: looser, as tails are noisier on a few cases."""
    min_latency_ms_for_ratio: Annotated[float, Field(ge=0)] = 50.0
    """Latencies under this count as this in the ratios, so jitter on fast models
    (1 ms against 3 ms) never fails a comparison."""
    confidence: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """0 gates each rate on its point estimate. A level such as 0.95 gates on its interval:
    the bound least favourable to green must clear the threshold, and when only the
    estimate clears it the verdict is inconclusive (too few cases to tell)."""
    max_output_tokens_ratio: Ratio = 1.5
    """Green's mean output tokens an answer over blue's."""
    min_judge_win_rate: Rate = 0.4
    """Green's win rate in the pairwise judge (ties count half), when a judge is set."""
    max_scorer_regression: Annotated[float, Field(ge=0)] = 0.0
    """How far green's mean on each MLflow scorer may fall below blue's, in its units."""
    min_schema_valid_rate: Rate = 0.9
    """Share of green's answered cases whose answer is JSON matching green's prompt's
    ``response_format`` schema; applies only when that prompt has one."""

    @property
    def report_confidence(self) -> float:
        """The level intervals are reported at: ``confidence``, else 95%."""
        return self.confidence or 0.95

    def loosened_from(self, configured: Thresholds) -> dict[str, tuple[float, float]]:
        """The limits on which these thresholds let more through than ``configured``:
        name to (this value, the configured value), in field order."""
        looser: dict[str, tuple[float, float]] = {}
        for name in type(self).model_fields:
            mine, theirs = getattr(self, name), getattr(configured, name)
            if mine > theirs if LOOSER_WHEN[name] == "higher" else mine < theirs:
                looser[name] = (mine, theirs)
        return looser

    def with_overrides(self, overrides: Mapping[str, object] | None) -> Thresholds:
        """These thresholds with ``overrides`` applied; :class:`InvalidInput` on a bad one."""
        try:
            return Thresholds.model_validate({**self.model_dump(), **(overrides or {})})
        except ValidationError as exc:
            err = exc.errors()[0]
            name = ".".join(str(p) for p in err["loc"])
            raise InvalidInput(f"threshold {name!r}: {err['msg']}", field="thresholds") from exc


LOOSER_WHEN: Mapping[str, Literal["higher", "lower"]] = {
    "min_mean_similarity": "lower",
    "agreement_similarity": "lower",
    "min_agreement_rate": "lower",
    "max_blue_error_rate": "higher",
    "max_green_error_rate": "higher",
    "max_assertion_regression": "higher",
    "min_assertion_pass_rate": "lower",
    "max_latency_ratio_p50": "higher",
    "max_latency_ratio_p95": "higher",
    "min_latency_ms_for_ratio": "higher",
    # Gating on an interval bound is stricter than on the point estimate.
    "confidence": "lower",
    "max_output_tokens_ratio": "higher",
    "min_judge_win_rate": "lower",
    "max_scorer_regression": "higher",
    "min_schema_valid_rate": "lower",
}
"""Which way each threshold moves to let a weaker green pass."""


# --- summary ---------------------------------------------------------------------------


class SlotSummary(BaseModel):
    """One slot over the whole golden set; latencies over its answered cases only."""

    errors: int
    error_rate: float
    errored_cases: list[str]
    assertions_passed: int
    assertions_total: int
    assertion_pass_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    assertion_interval: Interval | None = None
    latency_samples: int = 0
    """Calls the latency figures are measured on (a case called again counts again)."""


class Summary(BaseModel):
    """The numbers the verdict is decided on.

    The latency ratios are green over blue with each latency first raised to
    ``min_latency_ms_for_ratio``: the ratios the verdict compares with its limits.
    """

    cases: int
    compared: int
    exact_matches: int
    exact_match_rate: float | None
    mean_similarity: float | None
    agreement_rate: float | None
    differing_cases: list[str]
    regressed_cases: list[str]
    blue: SlotSummary
    green: SlotSummary
    latency_ratio_p50: float | None
    latency_ratio_p95: float | None
    confidence: float = 0.95
    """The level of every interval in this summary."""
    assertion_difference: Interval | None = None
    """Green's assertion pass rate minus blue's, with Newcombe's interval."""
    tokens: TokenSummary | None = None
    judge: JudgeSummary | None = None
    scorers: list[ScorerSummary] = Field(default_factory=list)
    schema_valid: SchemaSummary | None = None
    """Schema-valid rates, when a side's prompt has a ``response_format``."""


class Verdict(BaseModel):
    """Pass or fail, with one full sentence for every reason it failed."""

    passed: bool
    reasons: list[str]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` (0..1) percentile with linear interpolation between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- verdict reasons -------------------------------------------------------------------


def format_pair(value: float, limit: float) -> tuple[str, str]:
    """Both numbers with two decimals, or more when two would print them equal."""
    for digits in (2, 3, 4, 6):
        shown = f"{value:.{digits}f}", f"{limit:.{digits}f}"
        if shown[0] != shown[1]:
            break
    return shown


def _ids(ids: Sequence[str], limit: int = 10) -> str:
    more = len(ids) - limit
    return ", ".join(ids[:limit]) + (f" and {more} more" if more > 0 else "")


def _similarity_reason(s: Summary, t: Thresholds) -> str | None:
    if s.mean_similarity is None:
        return "no case was answered by both slots, so their outputs could not be compared"
    if s.mean_similarity < t.min_mean_similarity:
        return "mean similarity {} is below {}".format(
            *format_pair(s.mean_similarity, t.min_mean_similarity)
        )
    return None


def _agreement_reason(s: Summary, t: Thresholds) -> str | None:
    if s.agreement_rate is None or s.agreement_rate >= t.min_agreement_rate:
        return None
    rate, limit = format_pair(s.agreement_rate, t.min_agreement_rate)
    return (
        f"{len(s.differing_cases)} of {s.compared} cases differ (similarity below "
        f"{t.agreement_similarity:.2f}): {_ids(s.differing_cases)}; agreement rate {rate} "
        f"is below {limit}"
    )


def _error_reason(role: str, slot: SlotSummary, limit: float, cases: int) -> str | None:
    if slot.error_rate <= limit:
        return None
    rate, shown = format_pair(slot.error_rate, limit)
    return (
        f"{role} failed {slot.errors} of {cases} cases (error rate {rate} is above "
        f"{shown}): {_ids(slot.errored_cases)}"
    )


def _latency_reason(s: Summary, t: Thresholds, name: str) -> str | None:
    ratio = getattr(s, f"latency_ratio_{name}")
    limit = getattr(t, f"max_latency_ratio_{name}")
    if ratio is None or ratio <= limit:
        return None
    blue = getattr(s.blue, f"latency_{name}_ms")
    green = getattr(s.green, f"latency_{name}_ms")
    floor = t.min_latency_ms_for_ratio
    note = f" (latencies under {floor:g} ms count as {floor:g} ms)" if blue < floor else ""
    probed = s.green.latency_samples > s.cases - s.green.errors
    calls = f" (each case the median of its calls, {s.green.latency_samples} on green)"
    calls = calls if probed else ""
    return (
        f"green {name} latency {green:.1f} ms is {ratio:.2f} times blue's {blue:.1f} ms"
        f"{note}{calls}, above the limit of {limit:.2f}"
    )


def verdict_reasons(s: Summary, t: Thresholds) -> list[str]:
    """Why green fails on similarity, agreement, errors and latency (the quality checks
    with intervals are :func:`bgserve.evaluation.verdict_quality.quality_reasons`)."""
    if s.cases == 0:
        return ["the golden set has no cases, so nothing was compared"]
    found = [
        _similarity_reason(s, t),
        _agreement_reason(s, t),
        _error_reason("blue", s.blue, t.max_blue_error_rate, s.cases),
        _error_reason("green", s.green, t.max_green_error_rate, s.cases),
        _latency_reason(s, t, "p50"),
        _latency_reason(s, t, "p95"),
    ]
    return [reason for reason in found if reason is not None]
