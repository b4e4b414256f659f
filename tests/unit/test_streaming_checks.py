"""The streaming checks of live analysis, pure: time to first token, time per output
token and output tokens per answer, and a plan naming the checks it runs."""

from __future__ import annotations

from dataclasses import replace
from typing import get_args

import pytest

from bgserve.api.plan_schemas import CheckName, PlanRequest
from bgserve.domain import promotion, rollout
from bgserve.domain.analysis import AnalysisSettings, Outcome
from bgserve.domain.plan import make_plan, plan_json, plan_of
from bgserve.domain.state import Gate
from bgserve.domain.streaming import CHECKS, output_tokens, run, tpot, ttft_p95
from bgserve.domain.window import SideWindow, histogram, side_json, side_of
from bgserve.errors import InvalidInput
from tests.support.windows import in_slices

SETTINGS = AnalysisSettings(min_requests=20)


def llm(
    answers: int,
    ttft_ms: list[float] | float = 200.0,
    tpot_ms: float = 12.0,
    tokens: int = 40,
    errors: int = 0,
) -> SideWindow:
    ttfts = ttft_ms if isinstance(ttft_ms, list) else [ttft_ms] * answers
    return SideWindow(
        answers,
        errors,
        histogram([ttft + tokens * tpot_ms for ttft in ttfts]),
        ttft=histogram(ttfts),
        tpot=histogram([tpot_ms] * answers),
        tokens=histogram([tokens] * answers),
        output_tokens=tokens * answers,
    )


def test_the_checks_skip_a_source_that_measures_no_stream_and_wait_for_enough_answers() -> None:
    plain = SideWindow(100, 0, histogram([10.0] * 100))
    for check in (ttft_p95, tpot, output_tokens):
        assert check(plain, plain, SETTINGS).outcome is Outcome.SKIPPED
        few = check(llm(100), llm(5), SETTINGS)
        assert few.outcome is Outcome.INCONCLUSIVE and "green 5" in few.reason


def test_a_slower_first_token_fails_a_few_slow_answers_do_not() -> None:
    slower = ttft_p95(llm(100), llm(100, ttft_ms=600.0), SETTINGS)
    assert slower.outcome is Outcome.FAIL and slower.numbers["ratio"] > 1.5
    assert slower.numbers["p_value"] < 0.05
    # Six cold answers out of a hundred move the p95, not the distribution.
    spread = [100.0 + 3 * i for i in range(100)]
    cold = ttft_p95(
        llm(100, ttft_ms=spread), llm(100, ttft_ms=spread[:94] + [1500.0] * 6), SETTINGS
    )
    assert cold.numbers["ratio"] > 1.5 and cold.outcome is Outcome.PASS
    within = ttft_p95(llm(100), llm(100, ttft_ms=250.0), SETTINGS)
    assert within.outcome is Outcome.PASS


def test_time_per_token_and_cost_follow_their_own_limits() -> None:
    assert tpot(llm(60), llm(60, tpot_ms=30.0), SETTINGS).outcome is Outcome.FAIL
    assert tpot(llm(60), llm(60, tpot_ms=14.0), SETTINGS).outcome is Outcome.PASS
    wordy = output_tokens(llm(60), llm(60, tokens=100), SETTINGS)
    assert wordy.outcome is Outcome.FAIL and wordy.numbers["green_mean_tokens"] == 100
    lenient = replace(SETTINGS, max_output_tokens_ratio=3.0)
    assert output_tokens(llm(60), llm(60, tokens=100), lenient).outcome is Outcome.PASS
    assert output_tokens(llm(60), llm(60, tokens=20), SETTINGS).outcome is Outcome.PASS


def test_a_plan_runs_the_checks_it_names_in_order() -> None:
    blue, green = llm(100), llm(100, ttft_ms=900.0, errors=1)
    assert [c.name for c in run(blue, green, SETTINGS)] == [
        "error_rate",
        "latency_p50",
        "latency_p95",
    ]
    named = replace(SETTINGS, checks=("ttft_p95", "error_rate"))
    checks = run(blue, green, named)
    assert [(c.name, c.outcome) for c in checks] == [
        ("ttft_p95", Outcome.FAIL),
        ("error_rate", Outcome.PASS),
    ]


def test_a_failing_ttft_check_reverts_the_plan_at_the_end_of_the_bake() -> None:
    state = rollout.stage_green(rollout.create("chat", 1).state, 2).state
    state = replace(state, gate=Gate(1, 2, True))
    analysis = replace(SETTINGS, checks=("error_rate", "ttft_p95"))
    state = promotion.start(state, make_plan([10, 100], 30.0, analysis), now=0.0).state
    t = promotion.advance(state, llm(100), llm(100, ttft_ms=700.0), now=30.0)
    assert t.action == "auto-revert" and t.state.green_weight == 0
    checks = {c["name"]: c["outcome"] for c in t.details["analysis"]["checks"]}
    assert checks == {"error_rate": "pass", "ttft_p95": "fail"}


def test_plans_name_known_checks_and_keep_them_when_stored() -> None:
    assert set(get_args(CheckName)) == set(CHECKS)
    default = make_plan([10, 100], 30.0, AnalysisSettings())
    request = PlanRequest.model_validate(
        {"analysis": {"checks": ["error_rate", "ttft_p95"], "max_ttft_p95_ratio": 2.0}}
    )
    plan = request.to_plan(default)
    assert plan.analysis.checks == ("error_rate", "ttft_p95")
    assert plan.analysis.max_ttft_p95_ratio == 2.0
    stored = plan_of(plan_json(plan))
    assert stored is not None and stored.analysis == plan.analysis
    with pytest.raises(InvalidInput, match=r"plan\.analysis\.checks") as caught:
        make_plan([100], 0.0, AnalysisSettings(checks=("ttft_p99",)))
    assert caught.value.field == "plan.analysis.checks"
    with pytest.raises(InvalidInput, match="max_tpot_ratio"):
        make_plan([100], 0.0, AnalysisSettings(max_tpot_ratio=0))


def test_a_window_with_streaming_counts_survives_json_and_subtraction() -> None:
    later, earlier = llm(100), llm(40)
    assert side_of(side_json(later)) == later
    window = later.minus(earlier)
    assert window.requests == 60 and sum(window.ttft) == 60
    assert window.output_tokens == 40 * 60
    plain = SideWindow(10, 1, (1, 2))
    assert side_json(plain) == {"requests": 10, "errors": 1, "buckets": [1, 2]}


def sliced_ttft(per_slice: list[tuple[int, float]]) -> SideWindow:
    """Answers whose slices hold ``count`` first tokens after ``ms`` each, and their sum."""
    return in_slices([llm(n, ttft_ms=ms) for n, ms in per_slice])


def test_the_first_token_check_pairs_slices_so_a_burst_on_green_is_not_a_slower_green() -> None:
    # Seconds of contention (900 ms first tokens for everyone) alternate with calm ones
    # (150 ms); green happened to get more answers in the bursts (77% of its answers,
    # 4% of blue's). Over the whole window its p95 looks 6x worse; second by second the
    # two sides are the same.
    burst, calm = 900.0, 150.0
    blue = sliced_ttft([(3, burst), (80, calm)] * 10)
    green = sliced_ttft([(10, burst), (3, calm)] * 10)
    whole = ttft_p95(replace(blue, slices=()), replace(green, slices=()), SETTINGS)
    assert whole.outcome is Outcome.FAIL  # what the whole-window test believes
    paired = ttft_p95(blue, green, SETTINGS)
    assert paired.outcome is Outcome.PASS, paired.reason
    assert paired.numbers["paired"] is True and "paired by time" in paired.reason
    # A green slower in every slice still fails, paired.
    slow = sliced_ttft([(10, 2 * burst), (3, 3 * calm)] * 10)
    caught = ttft_p95(blue, slow, SETTINGS)
    assert caught.outcome is Outcome.FAIL and caught.numbers["paired"] is True


def test_a_check_names_its_reference() -> None:
    slower = tpot(llm(100), llm(100, tpot_ms=40.0), SETTINGS, reference="baseline")
    assert slower.outcome is Outcome.FAIL
    assert "against baseline" in slower.reason and "blue" not in slower.reason


def test_a_slower_first_token_is_decided_on_the_few_answers_an_llm_gives() -> None:
    # An LLM slot answers a few times a second: four spans of two answers a side, green's
    # first tokens twice as late in each. Ranked answer by answer within the spans, that
    # is enough; slice quantiles would need six slices of three answers a side.
    few = AnalysisSettings(min_requests=6)
    blue = sliced_ttft([(2, 200.0)] * 4)
    green = sliced_ttft([(2, 420.0)] * 4)
    decided = ttft_p95(blue, green, few)
    assert decided.outcome is Outcome.FAIL, decided.reason
    assert decided.numbers["paired"] is True and decided.numbers["p_value"] < 0.002
    waiting = ttft_p95(sliced_ttft([(2, 200.0)] * 3), sliced_ttft([(2, 420.0)] * 3), few)
    assert waiting.outcome is Outcome.INCONCLUSIVE
    assert "(3; 4 needed)" in waiting.reason
    alike = ttft_p95(blue, sliced_ttft([(2, 200.0)] * 4), few)
    assert alike.outcome is Outcome.PASS
