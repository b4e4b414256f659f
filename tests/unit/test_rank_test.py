"""The stratified rank test the streaming checks decide on: answers ranked within spans
of time (van Elteren), checked against the exact permutation test on small cases."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from bgserve.domain.rank_test import (
    MIN_STRATA,
    strata,
    stratified_slower_p_value,
    values_of,
)
from bgserve.domain.window import SideWindow, histogram


def ttfts(values: list[float]) -> SideWindow:
    return SideWindow(len(values), 0, histogram(values), ttft=histogram(values))


def read_ttft(window: SideWindow) -> tuple[int, ...]:
    return window.ttft


def p_value(spans: list[tuple[list[float], list[float]]]) -> float | None:
    blue = [ttfts(b) for b, _ in spans]
    green = [ttfts(g) for _, g in spans]
    return stratified_slower_p_value(blue, green, read_ttft)


def exact_p_value(spans: list[tuple[list[float], list[float]]]) -> float:
    """The permutation p-value of the same statistic: every relabelling of each span's
    answers (green keeps its count), as likely as any other when the sides are alike."""

    def statistic(labelled: list[tuple[list[float], list[float]]]) -> float:
        total = 0.0
        for blue, green in labelled:
            pooled = sorted(blue + green)
            ranks = {
                v: (pooled.index(v) + 1 + len(pooled) - pooled[::-1].index(v)) / 2 for v in pooled
            }
            n, size = len(green), len(pooled)
            total += (sum(ranks[v] for v in green) - n * (size + 1) / 2) / (size + 1)
        return total

    read = [(values_of(histogram(b)), values_of(histogram(g))) for b, g in spans]
    observed = statistic(read)
    choices = []
    for blue, green in read:
        pooled = blue + green
        picks = itertools.combinations(range(len(pooled)), len(green))
        choices.append(
            [
                (
                    [pooled[i] for i in range(len(pooled)) if i not in pick],
                    [pooled[i] for i in pick],
                )
                for pick in picks
            ]
        )
    outcomes = [statistic(list(combo)) for combo in itertools.product(*choices)]
    return sum(s >= observed - 1e-9 for s in outcomes) / len(outcomes)


def test_a_green_slower_in_every_span_is_decided_on_eight_answers_a_side() -> None:
    spans = [([200.0, 210.0], [450.0, 470.0])] * MIN_STRATA
    found = p_value(spans)
    assert found is not None and found < 0.0011
    assert exact_p_value(spans) == pytest.approx(1 / 6**4)
    assert p_value(spans[:-1]) is None  # three spans: too few to decide


def test_alike_sides_or_a_faster_green_are_not_slower() -> None:
    same = [([200.0, 200.0], [200.0, 200.0])] * 6
    assert p_value(same) == 1.0
    faster = [([450.0, 470.0], [200.0, 210.0])] * 6
    found = p_value(faster)
    assert found is not None and found > 0.99


def test_slices_merge_until_both_sides_have_two_answers() -> None:
    one_each = [ttfts([200.0])] * 8
    found = strata(one_each, one_each, read_ttft)
    assert [(len(b), len(g)) for b, g in found] == [(2, 2)] * 4
    # A slice where only green answered joins the next one; a trailing remainder waits.
    blue = [ttfts([]), ttfts([200.0, 200.0]), ttfts([200.0])]
    green = [ttfts([300.0]), ttfts([300.0]), ttfts([300.0])]
    assert [(len(b), len(g)) for b, g in strata(blue, green, read_ttft)] == [(2, 2)]


def test_a_burst_that_hits_green_more_is_not_a_slower_green() -> None:
    # Spans of contention (every answer 900 ms) and calm ones (150 ms): green answered
    # mostly in the contention. Within each span the sides are alike.
    burst = ([900.0] * 2, [900.0] * 6)
    calm = ([150.0] * 6, [150.0] * 2)
    found = p_value([burst, calm] * 4)
    assert found == 1.0


@pytest.mark.parametrize("seed", range(6))
def test_the_approximation_stays_near_the_exact_permutation_p_value(seed: int) -> None:
    rng = random.Random(seed)
    shift = rng.choice([0.0, 40.0, 120.0])
    spans = [
        (
            [rng.uniform(150, 300) for _ in range(2)],
            [rng.uniform(150, 300) + shift for _ in range(rng.choice([2, 3]))],
        )
        for _ in range(MIN_STRATA)
    ]
    found = p_value(spans)
    exact = exact_p_value(spans)
    assert found is not None
    # Close where decisions are made, never far off elsewhere.
    assert abs(found - exact) < 0.06
    if exact < 0.05:
        assert found < 2.5 * exact
    assert not math.isnan(found)
