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
  ``min_ttft_delta_ms`` above it *and* a test says green's answers are higher with p <
  ``significance`` (:func:`~bgserve.domain.analysis.slower`'s rule): ranked answer by
  answer within spans of time (:mod:`~bgserve.domain.rank_test`, the van Elteren test)
  when the window comes in slices, as load bursts hit both sides of a span alike, else
  the one-sided Mann-Whitney U test over the whole window. Answer by answer rather than
  the latency checks' slice quantiles because an LLM answers a few times a second: the
  test decides on eight answers a side instead of eighteen;
- ``tpot``: the same rule on the median time per output token (``max_tpot_ratio``,
  ``min_tpot_delta_ms``);
- ``output_tokens``: the cost signal, fails when green's mean output tokens per answer
  exceed ``max_output_tokens_ratio`` times blue's *and* a one-sided Mann-Whitney U test
  says green's answers are longer with p < ``significance`` (over the whole window: an
  answer's length does not swell with the machine's load).

``error_rate``, ``latency_p50`` and ``latency_p95`` are :mod:`bgserve.domain.analysis`'s;
:func:`run` runs the checks a plan names (``AnalysisSettings.checks``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

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
from bgserve.domain.rank_test import (
    MIN_STRATA,
    MIN_STRATUM_ANSWERS,
    strata,
    stratified_slower_p_value,
)
from bgserve.domain.window import Histogram, SideWindow, quantile_of


class CheckFn(Protocol):
    """One check: green's window against the reference's (``blue``), named ``reference``
    in its reasons."""

    def __call__(
        self,
        blue: SideWindow,
        green: SideWindow,
        settings: AnalysisSettings,
        reference: str = "blue",
    ) -> Check: ...


def _measured(
    name: str,
    blue: tuple[int, ...],
    green: tuple[int, ...],
    settings: AnalysisSettings,
    reference: str,
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
        f"{name}: too few measured answers ({reference} {blue_n}, green {green_n}; "
        f"{needed} each needed)",
        {"blue_answers": blue_n, "green_answers": green_n, "needed": needed},
    )


def _ratio_check(
    name: str,
    what: str,
    sides: tuple[SideWindow, SideWindow],
    measure: tuple[Histogram, float],
    limits: tuple[float, float],
    settings: AnalysisSettings,
    reference: str,
) -> Check:
    """The latency rule (:func:`~bgserve.domain.analysis.slower`) on the ``quantile`` of
    the ``histogram`` named by ``measure``, its answers ranked within spans of time when
    the windows come in slices."""
    (blue, green), (histogram, quantile) = sides, measure
    blue_counts, green_counts = tuple(histogram(blue)), tuple(histogram(green))
    if (early := _measured(name, blue_counts, green_counts, settings, reference)) is not None:
        return early
    p_value, paired = _answers_slower((blue, green), histogram)
    if p_value is None:
        return _too_few_strata(name, (blue, green), histogram)
    figures = Slower(
        max(quantile_of(blue_counts, quantile) or 0.0, LATENCY_FLOOR_MS),
        max(quantile_of(green_counts, quantile) or 0.0, LATENCY_FLOOR_MS),
        p_value,
    )
    how = f"{what}, paired by time: " if paired else f"{what} "
    check = slower(name, how, figures, limits, settings.significance, reference)
    return replace(check, numbers={**check.numbers, "paired": paired})


def _answers_slower(
    sides: tuple[SideWindow, SideWindow], histogram: Histogram
) -> tuple[float | None, bool]:
    """The p-value of "green's answers are higher than blue's" and whether it was paired
    by time: ranked within strata of time when the windows come in slices (None while too
    few strata are in), over the whole window for windows read without slices."""
    blue, green = sides
    if blue.slices or green.slices:
        return stratified_slower_p_value(blue.slices, green.slices, histogram), True
    return slower_p_value(blue, green, histogram), False


def _too_few_strata(name: str, sides: tuple[SideWindow, SideWindow], histogram: Histogram) -> Check:
    """The inconclusive check of windows whose answers cannot be stratified yet."""
    usable = len(strata(sides[0].slices, sides[1].slices, histogram))
    return Check(
        name,
        Outcome.INCONCLUSIVE,
        f"{name}: too few spans of time with {MIN_STRATUM_ANSWERS} answers on each side yet "
        f"({usable}; {MIN_STRATA} needed)",
        {"strata": usable, "needed": MIN_STRATA, "paired": True},
    )


def _ttft(window: SideWindow) -> Sequence[int]:
    return window.ttft


def _tpot(window: SideWindow) -> Sequence[int]:
    return window.tpot


def _tokens(window: SideWindow) -> Sequence[int]:
    return window.tokens


def ttft_p95(
    blue: SideWindow, green: SideWindow, settings: AnalysisSettings, reference: str = "blue"
) -> Check:
    """Green's p95 time to first token against blue's, as a ratio."""
    limits = (settings.max_ttft_p95_ratio, settings.min_ttft_delta_ms)
    what = "p95 time to first token"
    return _ratio_check("ttft_p95", what, (blue, green), (_ttft, 0.95), limits, settings, reference)


def tpot(
    blue: SideWindow, green: SideWindow, settings: AnalysisSettings, reference: str = "blue"
) -> Check:
    """Green's median time per output token against blue's, as a ratio."""
    limits = (settings.max_tpot_ratio, settings.min_tpot_delta_ms)
    what = "median time per output token"
    return _ratio_check("tpot", what, (blue, green), (_tpot, 0.5), limits, settings, reference)


def output_tokens(
    blue: SideWindow, green: SideWindow, settings: AnalysisSettings, reference: str = "blue"
) -> Check:
    """Green's mean output tokens per answer against blue's (the cost of an answer)."""
    name = "output_tokens"
    if (early := _measured(name, blue.tokens, green.tokens, settings, reference)) is not None:
        return early
    blue_mean = blue.output_tokens / sum(blue.tokens)
    green_mean = green.output_tokens / sum(green.tokens)
    ratio = green_mean / max(blue_mean, 1.0)
    p_value = slower_p_value(blue, green, _tokens)
    limit = settings.max_output_tokens_ratio
    numbers = {
        "blue_mean_tokens": round(blue_mean, 2),
        "green_mean_tokens": round(green_mean, 2),
        "ratio": round(ratio, 3),
        "max_ratio": limit,
        "p_value": p_value,
    }
    verdict = (
        f"output tokens per answer green {green_mean:.1f} against {reference} {blue_mean:.1f} "
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


def run(
    blue: SideWindow, green: SideWindow, settings: AnalysisSettings, reference: str = "blue"
) -> tuple[Check, ...]:
    """The checks ``settings.checks`` names, in that order (unknown names are refused
    when the plan is made: :func:`bgserve.domain.plan.check_analysis`); ``reference``
    names what ``blue`` is in their reasons (``"baseline"`` for a baseline slot)."""
    return tuple(CHECKS[name](blue, green, settings, reference) for name in settings.checks)
