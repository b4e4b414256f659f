"""Promotion plans and live analysis, pure: what is due when, from (state, counts, now)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bgserve.domain import promotion, rollout
from bgserve.domain.analysis import AnalysisSettings, Check, Outcome, analyse
from bgserve.domain.plan import make_plan, plan_json, plan_of
from bgserve.domain.plan_rules import parse_steps
from bgserve.domain.state import DeploymentState, Gate, Phase
from bgserve.domain.window import SideWindow, histogram
from bgserve.errors import GateClosed, IllegalTransition, InvalidInput

FAST = AnalysisSettings(min_requests=20, max_bake_s=60.0)


def staged(gate: bool = True) -> DeploymentState:
    state = rollout.stage_green(rollout.create("chat", 1).state, 2).state
    return replace(state, gate=Gate(1, 2, True)) if gate else state


def side(requests: int, errors: int = 0, latency_ms: float = 10.0) -> SideWindow:
    return SideWindow(requests, errors, histogram([latency_ms] * requests))


def started(steps: list[int] | None = None, **analysis: object) -> DeploymentState:
    settings = replace(FAST, **analysis)  # type: ignore[arg-type]
    plan = make_plan(steps or [10, 50, 100], 30.0, settings)
    return promotion.start(staged(), plan, now=1000.0).state


def test_start_applies_the_first_step_and_bakes_from_now() -> None:
    state = started()
    assert state.green_weight == 10 and state.phase is Phase.PROMOTING
    assert state.plan is not None and state.plan.step_started_at == 1000.0
    assert state.plan.bake_until == 1030.0


def test_start_needs_the_gate_unless_forced_and_refuses_a_second_plan() -> None:
    plan = make_plan([10, 100], 30.0, FAST)
    with pytest.raises(GateClosed):
        promotion.start(staged(gate=False), plan, 0.0)
    forced = promotion.start(staged(gate=False), replace(plan, force=True), 0.0)
    assert forced.state.green_weight == 10 and forced.details["force"] is True
    with pytest.raises(IllegalTransition, match="already under way") as caught:
        promotion.start(forced.state, plan, 1.0)
    assert caught.value.hint == "wait"
    with pytest.raises(IllegalTransition, match="under way"):
        rollout.shift(forced.state, 60)
    with pytest.raises(IllegalTransition, match="under way"):
        rollout.stage_green(forced.state, 3)


def test_a_plan_started_mid_shift_skips_the_steps_below() -> None:
    shifted = rollout.shift(staged(), 20).state
    state = promotion.start(shifted, make_plan([10, 50, 100], 30.0, FAST), 0.0).state
    assert state.plan is not None and state.plan.steps == (50, 100)
    assert state.green_weight == 50


def test_nothing_is_due_while_the_step_bakes() -> None:
    t = promotion.advance(started(), side(100), side(100), now=1029.9)
    assert not t.changed and not t.record


def test_a_passing_bake_moves_to_the_next_step_with_the_analysis_recorded() -> None:
    t = promotion.advance(started(), side(200), side(30), now=1030.0)
    assert t.changed and t.action == "shift" and t.state.green_weight == 50
    assert t.state.plan is not None and t.state.plan.step_started_at == 1030.0
    assert t.details["analysis"]["outcome"] == "pass" and t.details["analysis"]["step"] == 10


def test_the_last_step_is_the_cutover_and_ends_the_plan() -> None:
    state = promotion.advance(started(), side(200), side(30), now=1030.0).state
    t = promotion.advance(state, side(100), side(100), now=1060.0)
    assert t.action == "promote" and t.state.plan is None
    assert (t.state.blue, t.state.standby, t.state.green) == (2, 1, None)


def test_a_failing_green_is_reverted_at_once_with_the_numbers() -> None:
    t = promotion.advance(started(), side(400), side(50, errors=10), now=1030.0)
    assert t.action == "auto-revert" and t.state.green_weight == 0 and t.state.plan is None
    checks = {c["name"]: c for c in t.details["analysis"]["checks"]}
    assert checks["error_rate"]["outcome"] == "fail"
    assert checks["error_rate"]["green_errors"] == 10 and checks["error_rate"]["p_value"] < 0.05
    assert "error_rate" in t.reason and "back to 0%" in t.reason


def test_a_slower_green_is_reverted_on_latency() -> None:
    t = promotion.advance(started(), side(300, latency_ms=10), side(40, latency_ms=31), 1030.0)
    assert t.action == "auto-revert"
    latency = next(c for c in t.details["analysis"]["checks"] if c["name"] == "latency_p95")
    assert latency["outcome"] == "fail" and latency["ratio"] > 2.5


def test_too_little_traffic_bakes_on_then_holds_and_says_why() -> None:
    state = started()
    first = promotion.advance(state, side(100), side(5), now=1030.0)
    assert first.action == "analysis" and first.changed and first.state.green_weight == 10
    assert "too few requests (blue 100, green 5; 20 each needed)" in first.reason
    again = promotion.advance(first.state, side(100), side(6), now=1031.0)
    assert not again.changed  # recorded once per step, not every tick
    held = promotion.advance(first.state, side(100), side(7), now=1060.0)
    assert held.action == "hold" and held.state.phase is Phase.HELD
    assert held.state.plan is not None and "green 7" in held.state.plan.held
    assert not promotion.advance(held.state, side(999), side(999), now=2000.0).changed


def test_an_operator_resumes_a_held_plan_with_promote() -> None:
    held = promotion.advance(started(), side(100), side(1), now=1060.0).state
    resumed = promotion.start(held, make_plan([10, 100], 1.0, FAST), now=2000.0)
    assert resumed.state.green_weight == 50 and resumed.state.phase is Phase.PROMOTING
    assert "resumed by an operator" in resumed.reason


@pytest.mark.parametrize(
    ("choice", "action", "weight"), [("revert", "auto-revert", 0), ("continue", "shift", 50)]
)
def test_on_inconclusive_revert_or_continue(choice: str, action: str, weight: int) -> None:
    state = started(on_inconclusive=choice)
    t = promotion.advance(state, side(100), side(1), now=1060.0)
    assert t.action == action and t.state.green_weight == weight


def test_unknown_counts_are_inconclusive_never_a_pass() -> None:
    t = promotion.advance(started(), None, None, now=1030.0)
    assert t.action == "analysis" and "no traffic counts" in t.reason


def test_revert_drops_a_running_plan() -> None:
    reverted = rollout.revert(started())
    assert reverted.state.plan is None and reverted.state.green_weight == 0


@pytest.mark.parametrize(
    ("steps", "bake", "field"),
    [
        ([], 1.0, "plan.steps"),
        ([50, 10, 100], 1.0, "plan.steps"),
        ([10, 50], 1.0, "plan.steps"),
        ([10, 100], -1.0, "plan.bake_s"),
    ],
)
def test_bad_plans_name_the_field(steps: list[int], bake: float, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        make_plan(steps, bake, FAST)
    assert caught.value.field == field


@pytest.mark.parametrize("steps", [[], [0], [50, 10, 100], [10, 50], [10, 10, 100], [-5, 100]])
def test_the_one_steps_rule_names_the_field_it_is_given(steps: list[int]) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_steps(steps, field="BGSERVE_PLAN_STEPS")
    assert caught.value.field == "BGSERVE_PLAN_STEPS"
    assert caught.value.message.startswith("BGSERVE_PLAN_STEPS")


def test_a_first_step_of_zero_bakes_before_any_live_traffic() -> None:
    assert parse_steps([0, 50, 100]) == (0, 50, 100)
    assert make_plan([0, 100], 1.0, FAST).steps == (0, 100)


def test_bad_analysis_settings_name_the_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        make_plan([100], 60.0, replace(FAST, max_bake_s=10.0))
    assert caught.value.field == "plan.analysis.max_bake_s"
    with pytest.raises(InvalidInput) as caught:
        make_plan([100], 1.0, replace(FAST, on_inconclusive="shrug"))
    assert caught.value.field == "plan.analysis.on_inconclusive"


def test_plan_round_trips_through_its_stored_form_and_reads_the_old_list() -> None:
    state = promotion.advance(started(), side(100), side(2), now=1030.0).state
    assert plan_of(plan_json(state.plan)) == state.plan
    legacy = plan_of([50, 100])
    assert legacy is not None and legacy.steps == (50, 100) and legacy.step_started_at is None
    assert plan_of([]) is None and plan_of(None) is None


def test_analysis_needs_a_significant_and_material_difference() -> None:
    # 1 error in 60 against 0 in 600: above the tolerance but within noise.
    noisy = analyse(side(600), side(60, errors=1), FAST)
    assert noisy.outcome is Outcome.PASS
    worse = analyse(side(600, errors=6), side(200, errors=30), FAST)
    assert worse.outcome is Outcome.FAIL and worse.failed[0].name == "error_rate"
    # Significantly worse but within the tolerance of 10 points: not a failure.
    tolerant = analyse(
        side(600, errors=6), side(200, errors=30), replace(FAST, max_error_rate_delta=0.2)
    )
    assert tolerant.outcome is Outcome.PASS


def test_latency_without_a_histogram_is_skipped_not_passed_or_held() -> None:
    bare = analyse(SideWindow(100, 0), SideWindow(100, 0), FAST)
    latency = next(c for c in bare.checks if c.name == "latency_p95")
    assert latency.outcome is Outcome.SKIPPED and bare.outcome is Outcome.PASS


def test_window_subtraction_and_quantiles() -> None:
    earlier = side(100, errors=1, latency_ms=5)
    later = SideWindow(
        150, 4, tuple(a + b for a, b in zip(earlier.buckets, histogram([40.0] * 50), strict=True))
    )
    window = later.minus(earlier)
    assert (window.requests, window.errors) == (50, 3)
    p95 = window.quantile_ms(0.95)
    assert p95 is not None and 32 <= p95 <= 50
    reset = SideWindow(10, 0, histogram([1.0] * 10)).minus(earlier)
    assert reset.requests == 10  # a counter reset counts from zero


SHADOW_PASS = Check("shadow", Outcome.PASS, "shadow: 200 pairs, 0 differing, passed")
SHADOW_FAIL = Check("shadow", Outcome.FAIL, "shadow: 40% of pairs differ")


def test_a_0_percent_step_bakes_on_shadow_traffic_alone() -> None:
    plan = make_plan([0, 10, 100], 30.0, FAST)
    started = promotion.start(staged(), plan, now=1000.0)
    assert started.changed and started.state.green_weight == 0
    assert started.state.plan is not None and started.state.plan.step_started_at == 1000.0
    unjudged = promotion.advance(started.state, side(500), SideWindow(), now=1030.0)
    assert unjudged.action == "analysis" and "shadow traffic must judge it" in unjudged.reason
    passed = promotion.advance(started.state, None, None, 1030.0, (SHADOW_PASS,))
    assert passed.action == "shift" and passed.state.green_weight == 10
    failed = promotion.advance(started.state, None, None, 1030.0, (SHADOW_FAIL,))
    assert failed.action == "auto-revert" and "40% of pairs differ" in failed.reason


def test_a_failing_shadow_check_reverts_a_step_whose_live_traffic_is_fine() -> None:
    t = promotion.advance(started(), side(200), side(30), 1030.0, (SHADOW_FAIL,))
    assert t.action == "auto-revert"
    checks = {c["name"]: c["outcome"] for c in t.details["analysis"]["checks"]}
    assert checks == {
        "error_rate": "pass",
        "latency_p50": "pass",
        "latency_p95": "pass",
        "shadow": "fail",
    }


def test_a_plan_may_not_put_0_anywhere_but_first() -> None:
    with pytest.raises(InvalidInput) as caught:
        make_plan([10, 0, 100], 30.0, FAST)
    assert caught.value.field == "plan.steps"
    shifted = rollout.shift(staged(), 20).state
    planned = promotion.start(shifted, make_plan([0, 50, 100], 30.0, FAST), 0.0).state
    assert planned.plan is not None and planned.plan.steps == (50, 100)
