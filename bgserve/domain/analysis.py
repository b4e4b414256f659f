"""Live analysis of green against blue over one bake window: pass, fail or inconclusive.

Pure: counts in, verdict out. Each check yields **inconclusive** while either side has
fewer than ``min_requests`` requests in the window (not enough evidence is never read as
good or bad), then:

- ``error_rate``: fails when green's error rate exceeds blue's by more than
  ``max_error_rate_delta`` *and* a one-sided Fisher exact test says green is worse with
  p < ``significance``; a difference within noise passes.
- ``latency_p95``: fails when green's p95 (from the latency histogram) is more than
  ``max_latency_p95_ratio`` times blue's (both floored at 1 ms, so sub-millisecond noise
  cannot fail a step) *and* more than ``min_latency_delta_ms`` above it (an absolute
  floor: 3.4 ms against 10.7 ms is a ratio of 3, and nobody's answer is late for it)
  *and* a one-sided Mann-Whitney U test says green's latencies are higher with p <
  ``significance`` (so a few slow answers alone cannot either); skipped (and said so)
  when the traffic source keeps no latency histogram for a side.
- ``latency_p50``: the same rule on the median (same ratio and floor). A release slower
  by a constant (a model that takes 30 ms more) shifts the median by the whole amount,
  while on a busy machine queueing inflates both sides' p95 so much that the same 30 ms
  is a small ratio there: the median catches what the tail hides.

**Paired by time.** On a busy machine latencies come in bursts (another process takes
the cores for a second), so requests are not independent samples and the Mann-Whitney
test over the whole window believes a burst that happened to hit one side more. When the
window comes in **slices** (the rollout engine reads the counts every interval), the
latency checks instead compare green with blue slice by slice, each slice's two figures
measured over the same seconds, under the same load: green's quantile minus blue's in
every slice where both sides answered at least :data:`MIN_SLICE_REQUESTS` (neighbouring
slices merged until they do), and a one-sided Wilcoxon signed-rank test on those
differences. A burst raises both sides of its slice and cancels out; a slower release is
slower in every slice. While fewer than :data:`MIN_PAIRED_SLICES` slices can be paired
the check is **inconclusive** (the step bakes on): a whole-window test is exactly what a
burst fools, so it decides only for a window read without slices (the engine slices
every source it reads, Prometheus included; a slice spans a scrape there).

The analysis fails if any check fails, is inconclusive if none fails and one is
inconclusive, and passes otherwise (skipped checks count for nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from scipy.stats import fisher_exact, mannwhitneyu, wilcoxon

from bgserve.domain.rank_test import values_of
from bgserve.domain.window import Histogram, SideWindow, quantile_of

LATENCY_FLOOR_MS = 1.0
MIN_SLICE_REQUESTS = 3
MIN_PAIRED_SLICES = 6
# Six slices all slower give a one-sided Wilcoxon p of 1/64: enough to fail a step only
# when green is slower in (nearly) every slice, reachable within a 2 s bake.


def latencies(window: SideWindow) -> Sequence[int]:
    """A window's latency histogram."""
    return window.buckets


class Outcome(StrEnum):
    """A check's or an analysis' verdict."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    SKIPPED = "skipped"  # the source has no data for this check (no latency histogram)


DEFAULT_CHECKS = ("error_rate", "latency_p50", "latency_p95")


@dataclass(frozen=True)
class AnalysisSettings:
    """The thresholds of one plan's analysis (defaults come from settings)."""

    min_requests: int = 50
    max_error_rate_delta: float = 0.01
    significance: float = 0.05
    max_latency_p95_ratio: float = 1.5
    max_bake_s: float = 300.0
    on_inconclusive: str = "hold"
    # Which checks run (names of bgserve.domain.streaming.CHECKS), and the streaming ones'
    # limits: green's over blue's p95 time to first token, median time per output token,
    # and mean output tokens per answer (the cost).
    checks: tuple[str, ...] = DEFAULT_CHECKS
    max_ttft_p95_ratio: float = 1.5
    max_tpot_ratio: float = 1.5
    max_output_tokens_ratio: float = 1.5
    # Absolute floors: a latency check fails only when green is slower than blue by its
    # ratio *and* by this many milliseconds (small models: a few ms; LLMs: much more).
    min_latency_delta_ms: float = 10.0
    min_ttft_delta_ms: float = 50.0
    min_tpot_delta_ms: float = 2.0
    # The first seconds of each step do not count: the window starts this long after the
    # step's weight is applied (connections, caches and a new share settle first).
    initial_delay_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "checks", tuple(self.checks))  # a stored plan has a list


@dataclass(frozen=True)
class Check:
    """One check's verdict with the numbers behind it."""

    name: str
    outcome: Outcome
    reason: str
    numbers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Analysis:
    """Green against blue over one window: every check and the overall outcome."""

    outcome: Outcome
    checks: tuple[Check, ...]

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.outcome is Outcome.FAIL)

    def summary(self) -> str:
        """One line per check that did not pass (or "all checks passed")."""
        lines = [c.reason for c in self.checks if c.outcome in (Outcome.FAIL, Outcome.INCONCLUSIVE)]
        return "; ".join(lines) or "all checks passed"


def analyse(
    blue: SideWindow, green: SideWindow, settings: AnalysisSettings, reference: str = "blue"
) -> Analysis:
    """Compare green with blue over one window (see the module docstring); ``reference``
    names what ``blue`` is in the reasons (``"baseline"`` when a baseline slot is)."""
    checks = (
        error_rate(blue, green, settings, reference),
        latency_p50(blue, green, settings, reference),
        latency_p95(blue, green, settings, reference),
    )
    return combined(checks)


def combined(checks: tuple[Check, ...]) -> Analysis:
    """The analysis of these checks: fail if any fails, else inconclusive if any is."""
    outcomes = {c.outcome for c in checks}
    if Outcome.FAIL in outcomes:
        overall = Outcome.FAIL
    elif Outcome.INCONCLUSIVE in outcomes:
        overall = Outcome.INCONCLUSIVE
    else:
        overall = Outcome.PASS
    return Analysis(overall, checks)


def _too_few(
    name: str, blue: SideWindow, green: SideWindow, minimum: int, reference: str
) -> Check | None:
    if blue.requests >= minimum and green.requests >= minimum:
        return None
    return Check(
        name,
        Outcome.INCONCLUSIVE,
        f"{name}: too few requests ({reference} {blue.requests}, green {green.requests}; "
        f"{minimum} each needed)",
        {"blue_requests": blue.requests, "green_requests": green.requests, "needed": minimum},
    )


def error_rate(
    blue: SideWindow, green: SideWindow, settings: AnalysisSettings, reference: str = "blue"
) -> Check:
    """Green's error rate against blue's: a one-sided Fisher exact test plus a tolerance."""
    name = "error_rate"
    if (few := _too_few(name, blue, green, settings.min_requests, reference)) is not None:
        return few
    blue_rate, green_rate = blue.errors / blue.requests, green.errors / green.requests
    table = [
        [green.errors, green.requests - green.errors],
        [blue.errors, blue.requests - blue.errors],
    ]
    p_value = float(fisher_exact(table, alternative="greater").pvalue)
    numbers = {
        "blue_requests": blue.requests,
        "blue_errors": blue.errors,
        "blue_rate": round(blue_rate, 5),
        "green_requests": green.requests,
        "green_errors": green.errors,
        "green_rate": round(green_rate, 5),
        "p_value": p_value,
    }
    worse = green_rate - blue_rate > settings.max_error_rate_delta
    if worse and p_value < settings.significance:
        reason = (
            f"error_rate: green {green.errors}/{green.requests} ({green_rate:.1%}) against "
            f"{reference} "
            f"{blue.errors}/{blue.requests} ({blue_rate:.1%}), p={p_value:.2g} < "
            f"{settings.significance:g}, beyond the tolerance of {settings.max_error_rate_delta:g}"
        )
        return Check(name, Outcome.FAIL, reason, numbers)
    reason = (
        f"error_rate: green {green_rate:.1%} against {reference} {blue_rate:.1%} (p={p_value:.2g})"
    )
    return Check(name, Outcome.PASS, reason, numbers)


def latency_p95(
    blue: SideWindow, green: SideWindow, settings: AnalysisSettings, reference: str = "blue"
) -> Check:
    """Green's p95 latency against blue's: ratio, floor and significance."""
    return _latency("latency_p95", 0.95, (blue, green), settings, reference)


def latency_p50(
    blue: SideWindow, green: SideWindow, settings: AnalysisSettings, reference: str = "blue"
) -> Check:
    """Green's median latency against blue's: the same rule as :func:`latency_p95`."""
    return _latency("latency_p50", 0.5, (blue, green), settings, reference)


def _latency(
    name: str,
    quantile: float,
    sides: tuple[SideWindow, SideWindow],
    settings: AnalysisSettings,
    reference: str,
) -> Check:
    blue, green = sides
    if (few := _too_few(name, blue, green, settings.min_requests, reference)) is not None:
        return few
    blue_q, green_q = blue.quantile_ms(quantile), green.quantile_ms(quantile)
    if blue_q is None or green_q is None:
        return Check(name, Outcome.SKIPPED, f"{name}: no latency histogram to compare")
    p_value, paired = slower_test((blue, green), quantile)
    if p_value is None:
        return too_few_slices(name, (blue, green), quantile)
    figures = Slower(max(blue_q, LATENCY_FLOOR_MS), max(green_q, LATENCY_FLOOR_MS), p_value)
    limits = (settings.max_latency_p95_ratio, settings.min_latency_delta_ms)
    what = "paired by time: " if paired else ""
    check = slower(name, what, figures, limits, settings.significance, reference)
    return replace(check, numbers={**check.numbers, "paired": paired})


def slower_test(
    sides: tuple[SideWindow, SideWindow], quantile: float, histogram: Histogram = latencies
) -> tuple[float | None, bool]:
    """The p-value of "green's ``histogram`` is higher than blue's", and whether it was
    paired by time: paired when the windows come in slices (None while too few of them
    can be paired), over the whole window only for windows read without slices."""
    blue, green = sides
    if blue.slices or green.slices:
        return paired_slower_p_value(blue.slices, green.slices, quantile, histogram), True
    return slower_p_value(blue, green, histogram), False


def too_few_slices(
    name: str,
    sides: tuple[SideWindow, SideWindow],
    quantile: float,
    histogram: Histogram = latencies,
) -> Check:
    """The inconclusive check of windows whose slices cannot be paired yet."""
    usable = len(_paired_quantiles(sides[0].slices, sides[1].slices, quantile, histogram))
    return Check(
        name,
        Outcome.INCONCLUSIVE,
        f"{name}: too few time slices to pair yet ({usable} with {MIN_SLICE_REQUESTS} "
        f"answers on each side; {MIN_PAIRED_SLICES} needed)",
        {"paired_slices": usable, "needed": MIN_PAIRED_SLICES, "paired": True},
    )


@dataclass(frozen=True)
class Slower:
    """One latency-like figure of both sides (ms) and the p-value of "green's are higher"."""

    blue_ms: float
    green_ms: float
    p_value: float


def slower(
    name: str,
    what: str,
    figures: Slower,
    limits: tuple[float, float],
    significance: float,
    reference: str = "blue",
) -> Check:
    """The one rule of every latency check: fail when green's figure is above blue's by
    more than ``max_ratio`` times *and* by more than ``min_delta_ms`` (``limits``), *and*
    the test says green's are higher with p < ``significance``; pass otherwise.
    ``reference`` names blue's side in the reason."""
    max_ratio, min_delta_ms = limits
    blue_ms, green_ms, p_value = figures.blue_ms, figures.green_ms, figures.p_value
    ratio, delta = green_ms / blue_ms, green_ms - blue_ms
    numbers = {
        "blue_ms": round(blue_ms, 3),
        "green_ms": round(green_ms, 3),
        "ratio": round(ratio, 3),
        "max_ratio": max_ratio,
        "delta_ms": round(delta, 3),
        "min_delta_ms": min_delta_ms,
        "p_value": p_value,
    }
    verdict = (
        f"{what}green {green_ms:.1f} ms against {reference} {blue_ms:.1f} ms "
        f"({ratio:.2f}x, +{delta:.1f} ms, p={p_value:.2g})"
        if delta >= 0
        else f"{what}green {green_ms:.1f} ms against {reference} {blue_ms:.1f} ms "
        f"({ratio:.2f}x, p={p_value:.2g})"
    )
    too_slow = ratio > max_ratio and delta > min_delta_ms and p_value < significance
    if too_slow:
        rule = f"> {max_ratio:g}x and > +{min_delta_ms:g} ms"
        return Check(name, Outcome.FAIL, f"{name}: {verdict} {rule}", numbers)
    return Check(name, Outcome.PASS, f"{name}: {verdict}", numbers)


def paired_slower_p_value(
    blue: Sequence[SideWindow],
    green: Sequence[SideWindow],
    quantile: float,
    histogram: Histogram = latencies,
) -> float | None:
    """One-sided Wilcoxon signed-rank test of "green's ``quantile`` of ``histogram`` is
    higher than blue's" over time slices (see the module docstring); None when too few
    slices can be paired."""
    # Rounded to a nanosecond: the same quantile interpolated from two counts can differ
    # in its last bit, and the test would read that as green being slower.
    pairs = _paired_quantiles(blue, green, quantile, histogram)
    differences = [round(g - b, 6) for b, g in pairs]
    if len(differences) < MIN_PAIRED_SLICES:
        return None
    if not any(differences):
        return 1.0
    return float(wilcoxon(differences, alternative="greater", zero_method="zsplit").pvalue)


def _paired_quantiles(
    blue: Sequence[SideWindow],
    green: Sequence[SideWindow],
    quantile: float,
    histogram: Histogram,
) -> list[tuple[float, float]]:
    """Each merged slice's two quantiles: neighbouring slices are merged until both sides
    have :data:`MIN_SLICE_REQUESTS` values (a trailing remainder is left out)."""
    pairs = []
    blue_acc, green_acc = SideWindow(), SideWindow()
    for blue_slice, green_slice in zip(blue, green, strict=False):
        blue_acc, green_acc = blue_acc.plus(blue_slice), green_acc.plus(green_slice)
        blue_counts, green_counts = histogram(blue_acc), histogram(green_acc)
        if sum(blue_counts) < MIN_SLICE_REQUESTS or sum(green_counts) < MIN_SLICE_REQUESTS:
            continue
        blue_q, green_q = quantile_of(blue_counts, quantile), quantile_of(green_counts, quantile)
        if blue_q is not None and green_q is not None:
            pairs.append((blue_q, green_q))
        blue_acc, green_acc = SideWindow(), SideWindow()
    return pairs


def slower_p_value(blue: SideWindow, green: SideWindow, histogram: Histogram = latencies) -> float:
    """One-sided Mann-Whitney U: the p-value of "green's latencies are higher than blue's".

    Latencies are read at their bucket's midpoint, so the test sees the histogram's
    resolution; a few slow requests (a cold slot's first answers) do not make a
    whole-window slowdown.
    """
    blue_values, green_values = values_of(histogram(blue)), values_of(histogram(green))
    if not blue_values or not green_values:
        return 1.0
    return float(mannwhitneyu(green_values, blue_values, alternative="greater").pvalue)


def analysis_json(analysis: Analysis) -> dict[str, Any]:
    """The JSON form of an analysis, as stored on the plan and shown by the API."""
    return {
        "outcome": analysis.outcome.value,
        "checks": [
            {"name": c.name, "outcome": c.outcome.value, "reason": c.reason, **c.numbers}
            for c in analysis.checks
        ],
    }
