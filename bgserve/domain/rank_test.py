"""Green's answers against blue's, answer by answer, within spans of time: the test the
streaming checks decide on. Pure.

The latency checks pair time *slices* and compare one quantile a side per slice
(:func:`~bgserve.domain.analysis.paired_slower_p_value`): six slices of three answers a
side at least, eighteen green answers before anything is decided. A service answering
hundreds of requests a second has them within a second; an LLM slot answers a few times
a second and takes six seconds or more. So the streaming checks rank the answers, in
**strata** of time (the van Elteren test, a Mann-Whitney U test stratified): neighbouring
slices are merged until both sides have :data:`MIN_STRATUM_ANSWERS` answers, each
stratum's answers are ranked among themselves only, and the strata's rank sums are
combined with van Elteren's weights (``1 / (answers + 1)``). A burst that slows the
machine for a moment raises both sides of its stratum and ranks nothing higher; a slower
release is higher within every stratum. It decides once :data:`MIN_STRATA` strata are
in: eight answers a side at least.

The p-value is the normal approximation of the combined statistic, with the variance
corrected for ties (answers are read at their histogram bucket's midpoint, so equal
answers are common). With four strata of two answers a side, a green slower in every one
gives p = 0.0010 (exactly: 1/1296 = 0.0008).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import norm, rankdata

from bgserve.domain.latency import BUCKETS, LATENCY_BUCKETS_MS
from bgserve.domain.window import Histogram, SideWindow

MIN_STRATUM_ANSWERS = 2
MIN_STRATA = 4

BUCKET_MIDPOINTS = tuple(
    (LATENCY_BUCKETS_MS[i - 1] if i else 0.0) / 2
    + LATENCY_BUCKETS_MS[min(i, len(LATENCY_BUCKETS_MS) - 1)] / 2
    for i in range(BUCKETS)
)
"""Where a histogram's value is read in each bucket (the +Inf bucket at the last bound)."""


def values_of(counts: Sequence[int]) -> list[float]:
    """A histogram's values, each read at its bucket's midpoint."""
    return [v for v, n in zip(BUCKET_MIDPOINTS, counts, strict=False) for _ in range(n)]


def strata(
    blue: Sequence[SideWindow], green: Sequence[SideWindow], histogram: Histogram
) -> list[tuple[list[float], list[float]]]:
    """The windows' slices merged in order until both sides have
    :data:`MIN_STRATUM_ANSWERS` values of ``histogram``: each stratum's (blue, green)
    values. A trailing remainder is left out."""
    found = []
    blue_acc, green_acc = SideWindow(), SideWindow()
    for blue_slice, green_slice in zip(blue, green, strict=False):
        blue_acc, green_acc = blue_acc.plus(blue_slice), green_acc.plus(green_slice)
        blue_values, green_values = values_of(histogram(blue_acc)), values_of(histogram(green_acc))
        if min(len(blue_values), len(green_values)) >= MIN_STRATUM_ANSWERS:
            found.append((blue_values, green_values))
            blue_acc, green_acc = SideWindow(), SideWindow()
    return found


def stratified_slower_p_value(
    blue: Sequence[SideWindow], green: Sequence[SideWindow], histogram: Histogram
) -> float | None:
    """One-sided van Elteren test of "green's ``histogram`` values are higher than blue's"
    within strata of time (see the module docstring); None while fewer than
    :data:`MIN_STRATA` strata are in."""
    found = strata(blue, green, histogram)
    if len(found) < MIN_STRATA:
        return None
    statistic = variance = 0.0
    for blue_values, green_values in found:
        shift, spread = _rank_sum_shift(blue_values, green_values)
        weight = 1.0 / (len(blue_values) + len(green_values) + 1)
        statistic += weight * shift
        variance += weight * weight * spread
    if variance <= 0.0:
        return 1.0  # every stratum's answers all equal: nothing is higher
    return float(norm.sf(statistic / math.sqrt(variance)))


def _rank_sum_shift(blue: list[float], green: list[float]) -> tuple[float, float]:
    """Green's rank sum in one stratum minus its expectation under "alike", and that sum's
    variance (corrected for ties)."""
    ranks = rankdata(green + blue)
    m, n = len(blue), len(green)
    total = m + n
    shift = float(sum(ranks[:n])) - n * (total + 1) / 2
    ties = sum(t**3 - t for t in _tie_sizes(green + blue))
    spread = m * n / 12 * ((total + 1) - ties / (total * (total - 1)))
    return shift, spread


def _tie_sizes(values: list[float]) -> list[int]:
    counts: dict[float, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return [c for c in counts.values() if c > 1]
