"""Values of external (MLflow) scorers on both sides, and their summary. Pure.

A scorer may answer a bool, a number, or ``"yes"``/``"no"`` (MLflow's judges do); each is
read as a number (true and yes are 1). A scorer whose every value is 0 or 1 is a pass/fail
scorer: its pass rates get Wilson intervals and their difference Newcombe's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel

from bgserve.evaluation.confidence import Interval, difference_interval, wilson_interval

__all__ = ["ScorerSummary", "as_number", "summarize_scorers"]

_WORDS = {"yes": 1.0, "true": 1.0, "pass": 1.0, "no": 0.0, "false": 0.0, "fail": 0.0}


def as_number(value: object) -> float | None:
    """A scorer's value as a number; None for a value with no numeric reading."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _WORDS.get(value.strip().lower())
    return None


class ScorerSummary(BaseModel):
    """One scorer over the cases it scored on both sides."""

    name: str
    cases: int
    blue_mean: float | None
    green_mean: float | None
    binary: bool
    difference: Interval | None
    """Green minus blue, with Newcombe's interval for a pass/fail scorer (else the point)."""
    failures: int
    """Calls that raised or gave no numeric value, on either side."""


def _summary(
    name: str, pairs: Sequence[tuple[float | None, float | None]], confidence: float
) -> ScorerSummary:
    both = [(b, g) for b, g in pairs if b is not None and g is not None]
    failures = sum((b is None) + (g is None) for b, g in pairs)
    if not both:
        return ScorerSummary(
            name=name,
            cases=0,
            blue_mean=None,
            green_mean=None,
            binary=False,
            difference=None,
            failures=failures,
        )
    blue_mean = sum(b for b, _ in both) / len(both)
    green_mean = sum(g for _, g in both) / len(both)
    binary = all(v in (0.0, 1.0) for pair in both for v in pair)
    if binary:
        difference = difference_interval(
            wilson_interval(green_mean * len(both), len(both), confidence),
            wilson_interval(blue_mean * len(both), len(both), confidence),
        )
    else:
        point = green_mean - blue_mean
        difference = Interval(estimate=point, low=point, high=point, confidence=confidence)
    return ScorerSummary(
        name=name,
        cases=len(both),
        blue_mean=blue_mean,
        green_mean=green_mean,
        binary=binary,
        difference=difference,
        failures=failures,
    )


def summarize_scorers(
    blue: Sequence[Mapping[str, float | None]],
    green: Sequence[Mapping[str, float | None]],
    confidence: float,
) -> list[ScorerSummary]:
    """Per scorer name (sorted), the summary of the per-case values of both sides."""
    names = sorted({name for side in (blue, green) for scores in side for name in scores})
    return [
        _summary(
            name,
            [(b.get(name), g.get(name)) for b, g in zip(blue, green, strict=True) if name in b],
            confidence,
        )
        for name in names
    ]
