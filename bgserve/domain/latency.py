"""The latency histogram every traffic source keeps per slot: fixed buckets, 25% apart.

Kept apart from :mod:`bgserve.domain.analysis` (and its statistics library) so the data
plane can record latencies without importing anything heavy.
"""

from __future__ import annotations

from bisect import bisect_left


def _log_buckets(low: float, high: float, factor: float) -> tuple[float, ...]:
    bounds = [low]
    while bounds[-1] < high:
        bounds.append(round(bounds[-1] * factor, 3))
    return tuple(bounds)


LATENCY_BUCKETS_MS: tuple[float, ...] = _log_buckets(0.25, 120_000.0, 1.25)
"""Upper bounds (ms) of the histogram's buckets; one more bucket, +Inf, follows. Steps of
25%, so a quantile read from the histogram is within 25% of the true one."""

BUCKETS = len(LATENCY_BUCKETS_MS) + 1
"""How many counts a histogram holds (the bounds plus +Inf)."""


def bucket_of(latency_ms: float) -> int:
    """The index of the bucket ``latency_ms`` falls in (``BUCKETS - 1`` is +Inf)."""
    return bisect_left(LATENCY_BUCKETS_MS, latency_ms)
