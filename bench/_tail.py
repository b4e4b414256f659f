"""How sure a tail percentile is: its spread across rounds and a bootstrap interval.

A p99 over a few thousand requests moves with one unlucky pause, so every tail figure
comes with the spread of the same percentile over the run's rounds (consecutive equal
parts, interleaved with the other paths' rounds) and a 95% bootstrap interval over all
of the run's requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from _common import percentile, spread

RESAMPLES = 1000
BATCH = 100  # resamples drawn at once: bounds the memory of a 10,000-request path


def rounds(values: Sequence[float], parts: int) -> list[list[float]]:
    """``values`` cut into ``parts`` consecutive parts of (nearly) equal size."""
    size = len(values) / parts
    return [list(values[round(i * size) : round((i + 1) * size)]) for i in range(parts)]


def by_round(values: Sequence[float], parts: int, q: float) -> list[float]:
    """The ``q``-th percentile of each round."""
    return [percentile(part, q) for part in rounds(values, parts) if part]


Estimates = np.ndarray[Any, np.dtype[np.float64]]


def _resampled(values: Sequence[float], q: float, rng: np.random.Generator) -> Estimates:
    """The ``q``-th percentile (nearest rank, as reported) of RESAMPLES resamples."""
    data = np.asarray(values, dtype=float)
    rank = max(0, min(data.size - 1, round(q / 100 * data.size + 0.5) - 1))
    found: list[Estimates] = []
    for _ in range(RESAMPLES // BATCH):
        sample = rng.choice(data, size=(BATCH, data.size))
        found.append(np.partition(sample, rank, axis=1)[:, rank])
    return np.concatenate(found)


def _interval(estimates: Estimates) -> tuple[float, float]:
    return float(np.percentile(estimates, 2.5)), float(np.percentile(estimates, 97.5))


def bootstrap(values: Sequence[float], q: float, seed: int = 0) -> tuple[float, float]:
    """A 95% bootstrap interval of the ``q``-th percentile (nearest rank, as reported)."""
    if not len(values):
        return float("nan"), float("nan")
    return _interval(_resampled(values, q, np.random.default_rng(seed)))


def bootstrap_difference(
    top: Sequence[float], bottom: Sequence[float], q: float, seed: int = 0
) -> tuple[float, float]:
    """A 95% bootstrap interval of ``top``'s ``q``-th percentile minus ``bottom``'s (each
    path resampled on its own)."""
    if not len(top) or not len(bottom):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    return _interval(_resampled(top, q, rng) - _resampled(bottom, q, rng))


def tail(values: Sequence[float], parts: int) -> dict[str, Any]:
    """p99 of each round and their spread, and 95% intervals of the p99 and p99.9."""
    p99s = by_round(values, parts, 99)
    return {
        "rounds": parts,
        "p99_by_round_ms": p99s,
        "p99_round_spread_ms": spread(p99s),
        "p99_ci_ms": bootstrap(values, 99),
        "p999_ci_ms": bootstrap(values, 99.9),
    }


def ratio_spread(top: Sequence[float], bottom: Sequence[float]) -> dict[str, float]:
    """Median, min and max of round-by-round ratios (rounds of two paths side by side)."""
    return spread([a / b for a, b in zip(top, bottom, strict=True) if b > 0])
