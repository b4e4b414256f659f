"""Confidence intervals for rates: Wilson for one rate, Newcombe's for a difference. Pure.

A rate measured on a handful of cases says little; the gate can require an interval's
bound, not the point estimate, to clear a threshold. Wilson's score interval stays inside
0..1 and keeps a sensible width at 0 and 1 (8 of 8 is not "certainly 100%"); Newcombe's
hybrid score interval combines two Wilson intervals into one for ``green - blue``.
"""

from __future__ import annotations

import math
from functools import lru_cache

from pydantic import BaseModel, ConfigDict
from scipy.stats import norm

__all__ = ["Interval", "difference_interval", "wilson_interval", "z_value"]


class Interval(BaseModel):
    """A two-sided interval at ``confidence`` around ``estimate``."""

    model_config = ConfigDict(frozen=True)

    estimate: float
    low: float
    high: float
    confidence: float

    def shown(self) -> str:
        """``0.62 (0.41 to 0.79 at 95%)``."""
        return (
            f"{self.estimate:.2f} ({self.low:.2f} to {self.high:.2f} at {self.confidence * 100:g}%)"
        )


@lru_cache(maxsize=32)
def z_value(confidence: float) -> float:
    """The two-sided standard normal quantile for ``confidence`` (1.96 for 0.95)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return float(norm.ppf(1 - (1 - confidence) / 2))


def wilson_interval(successes: float, total: int, confidence: float) -> Interval | None:
    """Wilson's score interval for ``successes`` of ``total`` (a tie may count as 0.5);
    None when ``total`` is 0."""
    if total <= 0:
        return None
    z = z_value(confidence)
    p = min(1.0, max(0.0, successes / total))
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return Interval(
        estimate=p,
        low=max(0.0, centre - half),
        high=min(1.0, centre + half),
        confidence=confidence,
    )


def difference_interval(green: Interval | None, blue: Interval | None) -> Interval | None:
    """Newcombe's hybrid score interval for ``green - blue`` from their Wilson intervals
    (independent samples; both at the same confidence)."""
    if green is None or blue is None:
        return None
    estimate = green.estimate - blue.estimate
    below = math.hypot(green.estimate - green.low, blue.high - blue.estimate)
    above = math.hypot(green.high - green.estimate, blue.estimate - blue.low)
    return Interval(
        estimate=estimate,
        low=max(-1.0, estimate - below),
        high=min(1.0, estimate + above),
        confidence=green.confidence,
    )
