"""The verdict's quality checks that come with intervals: assertion pass rates, the
pairwise judge, MLflow scorers, and output tokens. Pure.

Each check gives at most one reason. With ``Thresholds.confidence`` at 0 a rate is judged
on its estimate; above 0 on the bound least favourable to green, and a reason that starts
with ``inconclusive:`` says the estimate clears the threshold but the cases are too few to
show it at that confidence.
"""

from __future__ import annotations

from collections.abc import Sequence

from bgserve.evaluation.confidence import Interval
from bgserve.evaluation.scorer_values import ScorerSummary
from bgserve.evaluation.verdict import Summary, Thresholds, format_pair

__all__ = ["INCONCLUSIVE", "outcome_of", "quality_reasons"]

INCONCLUSIVE = "inconclusive: "


def outcome_of(reasons: Sequence[str]) -> str:
    """``passed`` without reasons, ``inconclusive`` when every reason is one, else ``failed``."""
    if not reasons:
        return "passed"
    if all(reason.startswith(INCONCLUSIVE) for reason in reasons):
        return "inconclusive"
    return "failed"


def _level(interval: Interval) -> str:
    return f"{interval.confidence * 100:g}%"


def _assertion_reason(s: Summary, t: Thresholds) -> str | None:
    blue, green, diff = s.blue, s.green, s.assertion_difference
    if diff is None or blue.assertion_pass_rate is None or green.assertion_pass_rate is None:
        return None
    margin = t.max_assertion_regression
    if diff.estimate < -margin - 1e-9:
        reason = (
            f"green passes {green.assertions_passed} of {green.assertions_total} "
            f"assertions ({green.assertion_pass_rate:.2f}) against blue's "
            f"{blue.assertions_passed} of {blue.assertions_total} "
            f"({blue.assertion_pass_rate:.2f}), more than {margin:.2f} worse "
            f"(difference {diff.shown()})"
        )
        if s.regressed_cases:
            shown = ", ".join(s.regressed_cases[:10])
            more = len(s.regressed_cases) - 10
            reason += f"; green fails assertions that blue passes in {shown}"
            reason += f" and {more} more" if more > 0 else ""
        return reason
    if t.confidence and diff.low < -margin - 1e-9:
        return (
            f"{INCONCLUSIVE}{green.assertions_total} assertion checks cannot show a "
            f"{margin * 100:g}-point difference: green's pass rate minus blue's is "
            f"{diff.shown()}, whose lower bound is below -{margin:.2f}; add cases or "
            "raise max_assertion_regression"
        )
    return None


def _pass_floor_reason(s: Summary, t: Thresholds) -> str | None:
    green, limit = s.green, t.min_assertion_pass_rate
    interval = green.assertion_interval
    if green.assertion_pass_rate is None or limit <= 0:
        return None
    if green.assertion_pass_rate < limit:
        rate, shown = format_pair(green.assertion_pass_rate, limit)
        return (
            f"green passes {green.assertions_passed} of {green.assertions_total} "
            f"assertions ({rate}), below the minimum pass rate {shown}"
        )
    if t.confidence and interval is not None and interval.low < limit:
        return (
            f"{INCONCLUSIVE}green passes {green.assertions_passed} of "
            f"{green.assertions_total} assertions ({interval.shown()}); the lower bound is "
            f"below the minimum pass rate {limit:.2f}"
        )
    return None


def _judge_reason(s: Summary, t: Thresholds) -> str | None:
    judge = s.judge
    if judge is None or judge.judged + judge.errors == 0:
        return None  # no case both slots answered: the error checks say so
    if judge.judged == 0:
        return f"the judge gave no usable answer on any of {judge.errors} cases"
    record = (
        f"green wins {judge.wins}, loses {judge.losses} and ties {judge.ties} of "
        f"{judge.judged} cases judged by {judge.model}"
    )
    interval, limit = judge.interval, t.min_judge_win_rate
    if interval is None:
        return None
    if interval.estimate < limit:
        return (
            f"the judge prefers blue: {record} (win rate {interval.shown()}), below "
            f"the minimum win rate {limit:.2f}"
        )
    if t.confidence and interval.low < limit:
        return (
            f"{INCONCLUSIVE}{judge.judged} judged cases cannot show a win rate of "
            f"{limit:.2f}: {record} (win rate {interval.shown()})"
        )
    return None


def _scorer_reason(scorer: ScorerSummary, t: Thresholds) -> str | None:
    diff = scorer.difference
    if diff is None or scorer.blue_mean is None or scorer.green_mean is None:
        if scorer.failures:
            return (
                f"scorer {scorer.name!r} gave no value on any case (it raised or answered "
                "no number)"
            )
        return None
    margin = t.max_scorer_regression
    means = (
        f"mean {scorer.green_mean:.2f} against blue's {scorer.blue_mean:.2f} over "
        f"{scorer.cases} cases"
    )
    if diff.estimate < -margin - 1e-9:
        shown = diff.shown() if scorer.binary else f"{diff.estimate:.2f}"
        return (
            f"green scores lower than blue on scorer {scorer.name!r}: {means} "
            f"(difference {shown}), more than {margin:g} worse"
        )
    if t.confidence and scorer.binary and diff.low < -margin - 1e-9:
        return (
            f"{INCONCLUSIVE}{scorer.cases} cases cannot show that scorer {scorer.name!r} "
            f"is within {margin:g} of blue's: {means} (difference {diff.shown()})"
        )
    return None


def _token_reason(s: Summary, t: Thresholds) -> str | None:
    tokens = s.tokens
    if tokens is None or tokens.ratio is None or tokens.ratio <= t.max_output_tokens_ratio:
        return None
    blue, green = tokens.blue_mean or 0.0, tokens.green_mean or 0.0
    kind = "approximate" if tokens.approximate else "reported"
    return (
        f"green's answers are {tokens.ratio:.2f} times as long as blue's: {green:.1f} output "
        f"tokens an answer against {blue:.1f} ({kind} counts), above the limit of "
        f"{t.max_output_tokens_ratio:.2f}"
    )


def quality_reasons(s: Summary, t: Thresholds) -> list[str]:
    """Why green fails (or cannot be shown to pass) the quality checks, one sentence each."""
    if s.cases == 0:
        return []
    found = [
        _assertion_reason(s, t),
        _pass_floor_reason(s, t),
        _judge_reason(s, t),
        *(_scorer_reason(scorer, t) for scorer in s.scorers),
        _token_reason(s, t),
    ]
    return [reason for reason in found if reason is not None]
