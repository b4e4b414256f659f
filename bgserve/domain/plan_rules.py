"""What a valid promotion plan is: its steps, durations, warm-up, reference and analysis
thresholds. Each rule raises :class:`~bgserve.errors.InvalidInput` naming the field at
fault; :func:`bgserve.domain.plan.make_plan` applies them all. Pure."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.streaming import CHECKS
from bgserve.errors import InvalidInput

ON_INCONCLUSIVE = ("hold", "revert", "continue")
COMPARE_WITH = ("blue", "baseline")
RATIOS = (
    "max_latency_p95_ratio",
    "max_ttft_p95_ratio",
    "max_tpot_ratio",
    "max_output_tokens_ratio",
)
MAX_DURATION_S = 30 * 24 * 3600.0
MAX_WARMUP_REQUESTS = 10_000


@dataclass(frozen=True)
class Warmup:
    """Requests sent to green before a plan's first step, which no analysis counts: a
    fresh process's first answers pay for connections, caches and lazy loading, and
    judged against a blue that has served for hours they look like a slower release.

    ``requests`` 0 turns it off; ``timeout_s`` bounds the whole warm-up (the first step
    is applied when it runs out, with what was sent so far recorded).
    """

    requests: int = 0
    timeout_s: float = 30.0


def check_reference(compare_with: str, steps: Sequence[int]) -> None:
    """Raise InvalidInput unless green can be analysed against ``compare_with``: blue, or a
    baseline, which takes as much traffic as green, so no step but the cutover is over 50."""
    if compare_with not in COMPARE_WITH:
        raise InvalidInput(
            f"plan.compare_with {compare_with!r} must be one of {', '.join(COMPARE_WITH)}",
            field="plan.compare_with",
        )
    if compare_with == "baseline" and any(50 < s < 100 for s in steps):
        raise InvalidInput(
            f"plan.steps {list(steps)}: with a baseline, green and the baseline each take a "
            "step's weight, so every step before 100 must be at most 50, e.g. [10, 50, 100]",
            field="plan.steps",
        )


def check_duration(field: str, seconds: float) -> None:
    """Raise InvalidInput unless ``seconds`` is a finite duration in 0..MAX_DURATION_S."""
    if not 0 <= seconds <= MAX_DURATION_S:  # NaN fails both comparisons
        raise InvalidInput(
            f"{field} {seconds!r} must be between 0 and {MAX_DURATION_S:g} seconds (30 days)",
            field=field,
        )


def check_warmup(warmup: Warmup) -> None:
    """Raise InvalidInput for a warm-up that cannot work, naming the field."""
    if not 0 <= warmup.requests <= MAX_WARMUP_REQUESTS:
        raise InvalidInput(
            f"plan.warmup.requests {warmup.requests} must be in 0..{MAX_WARMUP_REQUESTS}",
            field="plan.warmup.requests",
        )
    check_duration("plan.warmup.timeout_s", warmup.timeout_s)


def parse_steps(steps: Sequence[int], field: str = "plan.steps") -> tuple[int, ...]:
    """A plan's steps, checked: strictly increasing weights from 0 to 100, ending at 100.

    The one rule for steps, wherever they come from (a request's plan, the settings'
    default plan; ``field`` names where, e.g. ``BGSERVE_PLAN_STEPS``). A first step of 0 is
    allowed: green then bakes on shadow traffic alone before it takes live requests.
    Raises InvalidInput naming ``field``.
    """
    if not steps:
        raise InvalidInput(f"{field} is empty: give increasing weights ending at 100", field=field)
    if any(not 0 <= s <= 100 for s in steps) or list(steps) != sorted(set(steps)):
        raise InvalidInput(
            f"{field} {list(steps)} must be strictly increasing weights from 0 to 100 "
            "(a first step of 0 bakes on shadow traffic alone)",
            field=field,
        )
    if steps[-1] != 100:
        raise InvalidInput(
            f"{field} {list(steps)} must end at 100, e.g. [10, 50, 100]", field=field
        )
    return tuple(steps)


def check_analysis(analysis: AnalysisSettings, bake_s: float) -> None:
    """Raise InvalidInput for analysis settings that cannot work, naming the field."""
    problems = [
        ("min_requests", analysis.min_requests < 1, "must be at least 1"),
        ("max_error_rate_delta", not 0 <= analysis.max_error_rate_delta <= 1, "must be in 0..1"),
        ("significance", not 0 < analysis.significance < 1, "must be between 0 and 1"),
        (
            "checks",
            not analysis.checks or not set(analysis.checks) <= CHECKS.keys(),
            f"must name one or more of {', '.join(CHECKS)}",
        ),
        ("max_bake_s", analysis.max_bake_s < bake_s, f"must be at least bake_s ({bake_s:g})"),
        (
            "on_inconclusive",
            analysis.on_inconclusive not in ON_INCONCLUSIVE,
            f"must be one of {', '.join(ON_INCONCLUSIVE)}",
        ),
    ]
    for name, bad, rule in problems:
        if bad:
            value = getattr(analysis, name)
            raise InvalidInput(
                f"plan.analysis.{name} {value!r} {rule}", field=f"plan.analysis.{name}"
            )
    for name in RATIOS:
        value = getattr(analysis, name)
        if not 0 < value < math.inf:  # NaN fails too; an infinite ratio turns a check off
            raise InvalidInput(
                f"plan.analysis.{name} {value!r} must be a finite number above 0",
                field=f"plan.analysis.{name}",
            )
    for name in ("min_latency_delta_ms", "min_ttft_delta_ms", "min_tpot_delta_ms"):
        value = getattr(analysis, name)
        if not 0 <= value <= MAX_DURATION_S * 1000:
            raise InvalidInput(
                f"plan.analysis.{name} {value!r} must be 0 or more milliseconds",
                field=f"plan.analysis.{name}",
            )
    check_duration("plan.analysis.max_bake_s", analysis.max_bake_s)
    check_duration("plan.analysis.initial_delay_s", analysis.initial_delay_s)
