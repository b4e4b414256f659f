"""The checks a plan can name, the streaming ones among them: how green's streamed chat
completions compare with blue's over one bake window. Pure: counts in, checks out.

The data plane measures each streamed answer as it passes (no copy of the body is kept):
the time to its first token, the time per output token after it, and its output tokens
(the slot's ``usage`` when it reports one, else the content events counted). Each check
is **inconclusive** while either side has fewer than ``min_requests`` measured answers,
and **skipped** when the traffic source measures nothing of the kind (a Prometheus
source, or no chat completion at all), then:

- ``ttft_p95``: fails when green's p95 time to first token is more than
  ``max_ttft_p95_ratio`` times blue's (both floored at 1 ms) *and* more than
  ``min_ttft_delta_ms`` above it *and* the one-sided Mann-Whitney U test of the latency
  check says green's are higher with p < ``significance`` (:func:`~bgserve.domain.analysis.slower`);
- ``tpot``: the same rule on the median time per output token (``max_tpot_ratio``,
  ``min_tpot_delta_ms``);
- ``output_tokens``: the cost signal, fails when green's mean output tokens per answer
  exceed ``max_output_tokens_ratio`` times blue's *and* the same test says green's
  answers are longer with p < ``significance``.

``error_rate``, ``latency_p50`` and ``latency_p95`` are :mod:`bgserve.domain.analysis`'s;
:func:`run` runs the checks a plan names (``AnalysisSettings.checks``).
"""

from __future__ import annotations

from collections.abc import Callable

from bgserve.domain.analysis import (
    LATENCY_FLOOR_MS,
    AnalysisSettings,
    Check,
    Outcome,
    Slower,
    error_rate,
    latency_p50,
    latency_p95,
    slower,
    slower_p_value,
)
from bgserve.domain.window import SideWindow

CheckFn = Callable[[SideWindow, SideWindow, AnalysisSettings], Check]


def _histogram(counts: tuple[int, ...]) -> SideWindow:
    """A window whose latency histogram is ``counts``, to reuse its quantile and test."""
    return SideWindow(sum(counts), 0, counts)


def _measured(
    name: str, blue: tuple[int, ...], green: tuple[int, ...], settings: AnalysisSettings
) -> Check | None:
    """The skipped or inconclusive check when a side has too few measured answers."""
    if not any(blue) and not any(green):
        return Check(name, Outcome.SKIPPED, f"{name}: no streamed chat completion measured")
    blue_n, green_n, needed = sum(blue), sum(green), settings.min_requests
    if blue_n >= needed and green_n >= needed:
        return None
    return Check(
        name,
        Outcome.INCONCLUSIVE,
        f"{name}: too few measured answers (blue {blue_n}, green {green_n}; {needed} each needed)",
        {"blue_answers": blue_n, "green_answers": green_n, "needed": needed},
    )


def _ratio_check(
    name: str,
    what: str,
    sides: tuple[tuple[int, ...], tuple[int, ...]],
    quantile: float,
    limits: tuple[float, float],
    settings: AnalysisSettings,
) -> Check:
    blue, green = sides
    if (early := _measured(name, blue, green, settings)) is not None:
        return early
    blue_side, green_side = _histogram(blue), _histogram(green)
    figures = Slower(
        max(blue_side.quantile_ms(quantile) or 0.0, LATENCY_FLOOR_MS),
        max(green_side.quantile_ms(quantile) or 0.0, LATENCY_FLOOR_MS),
        slower_p_value(blue_side, green_side),
    )
    return slower(name, f"{what} ", figures, limits, settings.significance)


def ttft_p95(blue: SideWindow, green: SideWindow, settings: AnalysisSettings) -> Check:
    """Green's p95 time to first token against blue's, as a ratio."""
    limits = (settings.max_ttft_p95_ratio, settings.min_ttft_delta_ms)
    sides = (blue.ttft, green.ttft)
    return _ratio_check("ttft_p95", "p95 time to first token", sides, 0.95, limits, settings)


def tpot(blue: SideWindow, green: SideWindow, settings: AnalysisSettings) -> Check:
    """Green's median time per output token against blue's, as a ratio."""
    limits = (settings.max_tpot_ratio, settings.min_tpot_delta_ms)
    sides = (blue.tpot, green.tpot)
    return _ratio_check("tpot", "median time per output token", sides, 0.5, limits, settings)


def output_tokens(blue: SideWindow, green: SideWindow, settings: AnalysisSettings) -> Check:
    """Green's mean output tokens per answer against blue's (the cost of an answer)."""
    name = "output_tokens"
    if (early := _measured(name, blue.tokens, green.tokens, settings)) is not None:
        return early
    blue_mean = blue.output_tokens / sum(blue.tokens)
    green_mean = green.output_tokens / sum(green.tokens)
    ratio = green_mean / max(blue_mean, 1.0)
    p_value = slower_p_value(_histogram(blue.tokens), _histogram(green.tokens))
    limit = settings.max_output_tokens_ratio
    numbers = {
        "blue_mean_tokens": round(blue_mean, 2),
        "green_mean_tokens": round(green_mean, 2),
        "ratio": round(ratio, 3),
        "max_ratio": limit,
        "p_value": p_value,
    }
    verdict = (
        f"output tokens per answer green {green_mean:.1f} against blue {blue_mean:.1f} "
        f"({ratio:.2f}x, p={p_value:.2g})"
    )
    if ratio > limit and p_value < settings.significance:
        return Check(name, Outcome.FAIL, f"{name}: {verdict} > {limit:g}x", numbers)
    return Check(name, Outcome.PASS, f"{name}: {verdict}", numbers)


CHECKS: dict[str, CheckFn] = {
    "error_rate": error_rate,
    "latency_p50": latency_p50,
    "latency_p95": latency_p95,
    "ttft_p95": ttft_p95,
    "tpot": tpot,
    "output_tokens": output_tokens,
}
"""Every check a plan can name, by name."""


def run(blue: SideWindow, green: SideWindow, settings: AnalysisSettings) -> tuple[Check, ...]:
    """The checks ``settings.checks`` names, in that order (unknown names are refused
    when the plan is made: :func:`bgserve.domain.plan.check_analysis`)."""
    return tuple(CHECKS[name](blue, green, settings) for name in settings.checks)
