"""When a plan's analysis looks and what it forgives: the warm-up before the first step,
the initial delay of each step, the bake that restarts after a lost window, the absolute
latency floors, and durations too long to represent."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from bgserve.api.plan_schemas import PlanOut
from bgserve.app.engine import RolloutEngine
from bgserve.app.executor import SYSTEM, Executor
from bgserve.app.service import Service
from bgserve.cli.plan_view import plan_lines
from bgserve.domain import promotion, rollout
from bgserve.domain.analysis import AnalysisSettings, Outcome, latency_p50, latency_p95
from bgserve.domain.plan import Plan, make_plan, plan_json, plan_of
from bgserve.domain.plan_rules import MAX_DURATION_S, Warmup
from bgserve.domain.state import DeploymentState, Gate
from bgserve.domain.streaming import ttft_p95
from bgserve.domain.window import SideWindow, histogram
from bgserve.errors import InvalidInput
from bgserve.store import Store
from bgserve.ui.list_view import plan_cell
from tests.support.executor_parts import (
    Aliases,
    Clock,
    FlakyRoutes,
    Traffic,
    bake_in_ticks,
    shifted_to,
)
from tests.support.windows import in_slices

FAST = AnalysisSettings(min_requests=20, max_bake_s=60.0)


def side(requests: int, latency_ms: float, errors: int = 0) -> SideWindow:
    return SideWindow(requests, errors, histogram([latency_ms] * requests))


def staged() -> DeploymentState:
    state = rollout.stage_green(rollout.create("chat", 1).state, 2).state
    return replace(state, gate=Gate(1, 2, True))


# absolute floors


def test_a_slower_green_within_the_floor_passes_and_beyond_it_fails() -> None:
    # The case: 3.4 ms against 10.7 ms is 3x, but 7 ms nobody waits for.
    blue, green = side(200, 3.4), side(200, 10.7)
    within = latency_p95(blue, green, replace(FAST, min_latency_delta_ms=10.0))
    assert within.outcome is Outcome.PASS, within.reason
    assert within.numbers["delta_ms"] < 10.0 and within.numbers["ratio"] > 1.5
    beyond = latency_p95(blue, side(200, 35.0), replace(FAST, min_latency_delta_ms=10.0))
    assert beyond.outcome is Outcome.FAIL
    assert "> 1.5x and > +10 ms" in beyond.reason
    # Without a floor the ratio alone decides, as before.
    assert latency_p95(blue, green, replace(FAST, min_latency_delta_ms=0.0)).outcome is Outcome.FAIL


def test_the_time_to_first_token_has_its_own_floor() -> None:
    def streamed(ttft_ms: float) -> SideWindow:
        return SideWindow(100, 0, (), histogram([ttft_ms] * 100))

    blue, green = streamed(40.0), streamed(80.0)  # 2x, +40 ms
    assert ttft_p95(blue, green, replace(FAST, min_ttft_delta_ms=50.0)).outcome is Outcome.PASS
    assert ttft_p95(blue, green, replace(FAST, min_ttft_delta_ms=20.0)).outcome is Outcome.FAIL


# the initial delay and the window


def delayed(delay: float) -> DeploymentState:
    plan = make_plan([10, 50, 100], 30.0, replace(FAST, initial_delay_s=delay))
    return promotion.start(staged(), plan, now=1000.0).state


def test_the_first_seconds_of_a_step_do_not_count() -> None:
    state = delayed(5.0)
    assert state.plan is not None and state.plan.bake_until == 1035.0
    during = promotion.advance(state, side(100, 10.0), side(100, 10.0), now=1004.9)
    assert not during.changed and "initial delay" in during.reason
    baking = promotion.advance(state, side(100, 10.0), side(100, 10.0), now=1034.9)
    assert not baking.changed and baking.reason == "baking"
    passed = promotion.advance(state, side(100, 10.0), side(100, 10.0), now=1035.0)
    assert passed.state.green_weight == 50


def test_a_window_first_read_late_bakes_its_full_time_again() -> None:
    # A new leader (or a restart) first reads the counts at 1100, long after the step's
    # bake would have ended: the bake counts from its reading, not from the step's start.
    state = delayed(0.0)
    early = promotion.advance(state, side(100, 10.0), side(5, 10.0), 1101.0, window_since=1100.0)
    assert not early.changed and early.reason == "baking"
    done = promotion.advance(state, side(100, 10.0), side(100, 10.0), 1130.0, window_since=1100.0)
    assert done.state.green_weight == 50


def engine_parts(
    store: Store, plan_settings: AnalysisSettings, warmup: Warmup | None = None
) -> tuple[Executor, FlakyRoutes, Service]:
    backend = FlakyRoutes()
    executor = Executor(store, backend, Aliases(), clock=Clock(), lock_timeout=1.0)
    default = make_plan([10, 50, 100], 30.0, plan_settings, warmup=warmup)
    service = Service(
        store,
        registry=None,  # type: ignore[arg-type]  # no registration in these tests
        backend=backend,
        executor=executor,
        default_plan=default,
        wall_clock=lambda: 1000.0,
    )
    return executor, backend, service


def test_the_engine_counts_nothing_from_the_initial_delay(store: Store) -> None:
    executor, _backend, service = engine_parts(store, replace(FAST, initial_delay_s=5.0))
    shifted_to(executor, 0)
    traffic, now = Traffic(), [1000.0]
    engine = RolloutEngine(executor, store, traffic, interval=1.0, clock=lambda: now[0])
    service.start_plan("chat", "alice")
    engine.tick()
    # A cold green fails every request of the step's first seconds...
    traffic.add(1, 200)
    traffic.add(2, 40, errors=40)
    now[0] = 1005.0
    engine.tick()  # the window starts here, after the delay
    # ... and then answers like blue for the rest of the step.
    bake_in_ticks(engine, now, 1035.0, traffic.adding({1: 20, 2: 5}))
    state = store.get_deployment("chat").state
    assert state.green_weight == 50, store.history("chat")[-1].reason
    assert state.plan is not None
    check = state.plan.analyses[-1]["checks"][0]
    assert (check["green_requests"], check["green_errors"]) == (50, 0)


def test_the_engine_restarted_mid_step_bakes_the_step_again(store: Store) -> None:
    executor, _backend, service = engine_parts(store, FAST)
    shifted_to(executor, 0)
    traffic, now = Traffic(), [1000.0]
    service.start_plan("chat", "alice")
    # The engine that applied the step dies; a new leader first looks at 1200.
    now[0] = 1200.0
    engine = RolloutEngine(executor, store, traffic, interval=1.0, clock=lambda: now[0])
    engine.tick()
    traffic.add(1, 200)
    traffic.add(2, 50)
    now[0] = 1201.0
    engine.tick()
    assert store.get_deployment("chat").state.green_weight == 10  # not judged on 1 s
    bake_in_ticks(engine, now, 1230.0, traffic.adding({1: 20, 2: 5}))
    assert store.get_deployment("chat").state.green_weight == 50


# the warm-up


class RecordingWarmer:
    """Stands for green's slot: records what it was asked to warm, and when."""

    def __init__(self) -> None:
        self.warmed: list[tuple[str, int | None, int]] = []
        self.release = threading.Event()

    def warm(self, state: DeploymentState) -> dict[str, Any]:
        assert state.plan is not None
        self.release.wait(5)
        self.warmed.append((state.name, state.green, state.green_weight))
        return {"requests": state.plan.warmup.requests, "sent": 20, "failed": 0, "seconds": 0.1}


def test_green_is_warmed_before_the_first_step_and_nothing_is_counted_then(
    store: Store,
) -> None:
    executor, backend, service = engine_parts(store, FAST, Warmup(requests=20))
    shifted_to(executor, 0)
    warmer, now = RecordingWarmer(), [1000.0]
    engine = RolloutEngine(
        executor, store, Traffic(), interval=1.0, clock=lambda: now[0], warmer=warmer
    )
    started = service.start_plan("chat", "alice")
    assert started.state.green_weight == 0 and backend.weights("chat") == {1: 100, 2: 0}
    assert started.state.plan is not None and started.state.plan.needs_warmup
    engine.tick()
    engine.tick()  # a warm-up under way is not started twice
    assert store.get_deployment("chat").state.green_weight == 0
    warmer.release.set()
    engine.wait_warmups(5)
    assert warmer.warmed == [("chat", 2, 0)]  # warmed while it took no traffic
    state = store.get_deployment("chat").state
    assert state.green_weight == 10 and backend.weights("chat") == {1: 90, 2: 10}
    assert state.plan is not None and state.plan.step_started_at == 1000.0
    last = store.history("chat")[-1]
    assert (last.action, last.principal) == ("shift", SYSTEM)
    assert last.details is not None and last.details["warmup"]["sent"] == 20
    assert "warmed up" in last.reason


def test_a_revert_during_the_warm_up_wins(store: Store) -> None:
    executor, backend, service = engine_parts(store, FAST, Warmup(requests=20))
    shifted_to(executor, 0)
    warmer = RecordingWarmer()
    engine = RolloutEngine(executor, store, Traffic(), interval=1.0, warmer=warmer)
    service.start_plan("chat", "alice")
    engine.tick()
    service.revert("chat", "bob")
    warmer.release.set()
    engine.wait_warmups(5)
    state = store.get_deployment("chat").state
    assert (state.green_weight, state.plan) == (0, None)
    assert backend.weights("chat") == {1: 100, 2: 0}


def test_a_plan_started_mid_shift_needs_no_warm_up() -> None:
    shifted = rollout.shift(staged(), 20).state
    plan = make_plan([10, 50, 100], 30.0, FAST, warmup=Warmup(requests=20))
    state = promotion.start(shifted, plan, now=0.0).state
    assert state.green_weight == 50 and state.plan is not None and not state.plan.needs_warmup


def test_a_warm_up_plan_survives_the_store() -> None:
    plan = make_plan([10, 100], 30.0, FAST, warmup=Warmup(requests=7, timeout_s=3.0))
    again = plan_of(plan_json(plan))
    assert again == plan and again is not None and again.needs_warmup


# durations


@pytest.mark.parametrize(
    ("field", "plan_args"),
    [
        ("plan.bake_s", {"bake_s": 1e12}),
        ("plan.bake_s", {"bake_s": float("inf")}),
        ("plan.bake_s", {"bake_s": float("nan")}),
        ("plan.analysis.max_bake_s", {"analysis": replace(FAST, max_bake_s=1e12)}),
        ("plan.analysis.initial_delay_s", {"analysis": replace(FAST, initial_delay_s=-1.0)}),
        ("plan.warmup.timeout_s", {"warmup": Warmup(5, 1e12)}),
        ("plan.warmup.requests", {"warmup": Warmup(-1)}),
    ],
)
def test_durations_that_cannot_be_represented_are_refused(
    field: str, plan_args: dict[str, Any]
) -> None:
    args: dict[str, Any] = {"bake_s": 30.0, "analysis": FAST, **plan_args}
    warmup = args.pop("warmup", None)
    with pytest.raises(InvalidInput) as caught:
        make_plan([10, 100], args["bake_s"], args["analysis"], warmup=warmup)
    assert caught.value.field == field
    assert f"{MAX_DURATION_S:g}" in caught.value.message or "0.." in caught.value.message


# the baseline (Kayenta's design)


def test_a_baseline_plan_splits_three_ways_and_retires_the_baseline_at_the_end(
    store: Store,
) -> None:
    executor, backend, service = engine_parts(store, FAST)
    shifted_to(executor, 0)
    plan = make_plan([10, 50, 100], 30.0, FAST, compare_with="baseline")
    started = service.start_plan("chat", "alice", plan)
    baseline = started.state.baseline
    assert baseline is not None and baseline not in (1, 2)
    copy, blue = store.get_release(baseline), store.get_release(1)
    assert (copy.model_uri, copy.prompt_uri, copy.bundle_name, copy.bundle_version) == (
        blue.model_uri,
        blue.prompt_uri,
        blue.bundle_name,
        blue.bundle_version,
    )
    assert backend.weights("chat") == {1: 80, 2: 10, baseline: 10}
    assert backend.slots()[("chat", baseline)] is True
    reverted = service.revert("chat", "bob")
    assert reverted.state.baseline is None
    assert backend.weights("chat") == {1: 100, 2: 0}
    assert ("chat", baseline) not in backend.slots()


class BaselineRun:
    """A deployment at 0% with a plan that judges green against a baseline, the engine
    on an injected clock at 1000 (the first step's window started), and its traffic."""

    def __init__(self, store: Store) -> None:
        executor, self.backend, service = engine_parts(store, FAST)
        shifted_to(executor, 0)
        plan = make_plan([10, 50, 100], 30.0, FAST, compare_with="baseline")
        baseline = service.start_plan("chat", "alice", plan).state.baseline
        assert baseline is not None
        self.baseline, self.store, self.traffic, self.now = baseline, store, Traffic(), [1000.0]
        self.engine = RolloutEngine(
            executor, store, self.traffic, interval=1.0, clock=lambda: self.now[0]
        )
        self.engine.tick()

    def bake(self, until: float, latencies_ms: dict[int, float], requests: int = 200) -> None:
        """Each release answers ``requests`` at its latency, spread over ten looks of the
        engine up to ``until``."""

        def one_tick() -> None:
            for release_id, latency_ms in latencies_ms.items():
                before = self.traffic.counts.get(release_id, SideWindow())
                self.traffic.counts[release_id] = before.plus(side(requests // 10, latency_ms))

        bake_in_ticks(self.engine, self.now, until, one_tick)


def test_green_is_judged_against_its_baseline_not_against_blue(store: Store) -> None:
    # Blue has served for hours and answers in 10 ms; green and the baseline are both new
    # and answer in 40 ms: a fresh process, not a slower release.
    run = BaselineRun(store)
    baseline = run.baseline
    run.bake(1030.0, {1: 10.0, 2: 40.0, baseline: 40.0})
    state = store.get_deployment("chat").state
    assert state.green_weight == 50, store.history("chat")[-1].reason
    assert run.backend.weights("chat") == {1: 0, 2: 50, baseline: 50}
    run.engine.tick()  # the new step's window starts
    run.bake(1060.0, {1: 10.0, 2: 40.0, baseline: 40.0}, requests=100)
    done = store.get_deployment("chat").state
    assert (done.blue, done.green, done.baseline) == (2, None, None)
    assert run.backend.weights("chat") == {2: 100, 1: 0}
    assert ("chat", baseline) not in run.backend.slots()


def test_a_slower_green_is_caught_against_its_baseline(store: Store) -> None:
    run = BaselineRun(store)
    run.bake(1030.0, {1: 40.0, 2: 90.0, run.baseline: 40.0})
    last = store.history("chat")[-1]
    assert last.action == "auto-revert" and "latency_p95" in last.reason
    # The reason names what green was measured against.
    assert "against baseline 4" in last.reason and "against blue" not in last.reason
    assert run.backend.weights("chat") == {1: 100, 2: 0}
    assert ("chat", run.baseline) not in run.backend.slots()


def test_a_baseline_needs_steps_of_at_most_50_before_the_cutover() -> None:
    with pytest.raises(InvalidInput, match="at most 50") as caught:
        make_plan([10, 75, 100], 30.0, FAST, compare_with="baseline")
    assert caught.value.field == "plan.steps"
    with pytest.raises(InvalidInput) as unknown:
        make_plan([10, 100], 30.0, FAST, compare_with="production")
    assert unknown.value.field == "plan.compare_with"


def test_the_median_catches_a_constant_slowdown_that_a_busy_tail_hides() -> None:
    # On a busy machine one answer in ten waits 120 ms for a core, on both sides; green's
    # model takes 30 ms more on every answer: 1.25x at the p95, 4x at the median.
    def busy(extra_ms: float) -> SideWindow:
        latencies = [10.0 + extra_ms] * 180 + [120.0 + extra_ms] * 20
        return SideWindow(200, 0, histogram(latencies))

    blue, green = busy(0.0), busy(30.0)
    assert latency_p95(blue, green, FAST).outcome is Outcome.PASS
    median = latency_p50(blue, green, FAST)
    assert median.outcome is Outcome.FAIL, median.reason
    assert median.numbers["delta_ms"] > 20
    assert latency_p50(blue, busy(0.0), FAST).outcome is Outcome.PASS


# paired by time


def sliced(per_slice: list[tuple[int, float]]) -> SideWindow:
    """A window whose slices hold ``count`` latencies of ``ms`` each, and their sum."""
    return in_slices([SideWindow(n, 0, histogram([ms] * n)) for n, ms in per_slice])


def test_a_burst_that_hits_green_more_is_not_a_slower_green() -> None:
    # Bursts (100 ms for everyone) and calm seconds (10 ms) alternate; green happened to
    # get more requests in the bursts. Over the whole window its median is 10x blue's;
    # second by second the two are the same.
    burst, calm = 100.0, 10.0
    blue = sliced([(3, burst), (9, calm)] * 10)
    green = sliced([(9, burst), (3, calm)] * 10)
    unpaired = latency_p50(replace(blue, slices=()), replace(green, slices=()), FAST)
    assert unpaired.outcome is Outcome.FAIL  # what the whole-window test believes
    paired = latency_p50(blue, green, FAST)
    assert paired.outcome is Outcome.PASS, paired.reason
    assert paired.numbers["paired"] is True and "paired by time" in paired.reason


def test_too_few_slices_to_pair_wait_instead_of_trusting_the_whole_window() -> None:
    # Two slices: green got its requests in the burst. The whole-window test would fail
    # it; with slices that cannot be paired yet, the check waits for more of them.
    blue = sliced([(3, 100.0), (40, 10.0)])
    green = sliced([(30, 100.0), (3, 10.0)])
    check = latency_p50(blue, green, FAST)
    assert check.outcome is Outcome.INCONCLUSIVE, check.reason
    assert "too few time slices" in check.reason and check.numbers["paired_slices"] == 2
    # A window read without slices is judged whole.
    whole = latency_p50(replace(blue, slices=()), replace(green, slices=()), FAST)
    assert whole.outcome is Outcome.FAIL and whole.numbers["paired"] is False


def test_a_green_slower_in_every_slice_fails_paired() -> None:
    blue = sliced([(3, 100.0), (9, 10.0)] * 10)
    green = sliced([(9, 130.0), (3, 40.0)] * 10)
    check = latency_p50(blue, green, FAST)
    assert check.outcome is Outcome.FAIL and check.numbers["paired"] is True


def test_the_engine_cuts_the_window_into_slices(store: Store) -> None:
    executor, _backend, service = engine_parts(store, FAST)
    shifted_to(executor, 0)
    traffic, now = Traffic(), [1000.0]
    engine = RolloutEngine(executor, store, traffic, interval=0.5, clock=lambda: now[0])
    service.start_plan("chat", "alice")
    engine.tick()
    while now[0] < 1030.0:
        now[0] += 0.5
        traffic.add(1, 9)
        traffic.add(2, 3)
        engine.tick()
    state = store.get_deployment("chat").state
    assert state.green_weight == 50
    assert state.plan is not None
    checks = {c["name"]: c for c in state.plan.analyses[-1]["checks"]}
    assert checks["latency_p50"]["paired"] is True


@pytest.mark.parametrize("ratio", [float("inf"), float("nan"), 0.0])
def test_a_ratio_that_turns_a_check_off_is_refused(ratio: float) -> None:
    with pytest.raises(InvalidInput, match="finite number above 0") as caught:
        make_plan([10, 100], 30.0, replace(FAST, max_latency_p95_ratio=ratio))
    assert caught.value.field == "plan.analysis.max_latency_p95_ratio"


class BrokenWarmer:
    """A warm-up that blows up (a bug, an exhausted machine)."""

    def warm(self, state: DeploymentState) -> dict[str, Any]:
        raise OSError("too many open files")


def test_a_warm_up_that_fails_never_keeps_the_plan_from_its_first_step(store: Store) -> None:
    executor, backend, service = engine_parts(store, FAST, Warmup(requests=20))
    shifted_to(executor, 0)
    engine = RolloutEngine(executor, store, Traffic(), interval=1.0, warmer=BrokenWarmer())
    service.start_plan("chat", "alice")
    engine.tick()
    engine.wait_warmups(5)
    assert backend.weights("chat") == {1: 90, 2: 10}
    last = store.history("chat")[-1]
    assert last.details is not None and "too many open files" in last.details["warmup"]["skipped"]


def test_the_dashboard_and_the_cli_show_a_plan_stored_before_the_cap_and_a_warm_up() -> None:
    huge = Plan((10, 100), 1e12, FAST, step_started_at=1000.0)
    state = replace(staged(), plan=huge, green_weight=10)
    assert "step 1 of 2" in plan_cell(state, datetime.now(UTC))
    warming = make_plan([10, 100], 30.0, FAST, warmup=Warmup(requests=5))
    cell = plan_cell(replace(staged(), plan=warming), datetime.now(UTC))
    assert "warming green up" in cell
    shown = PlanOut.of(warming)
    assert shown is not None
    lines = plan_lines({"plan": shown.model_dump(mode="json")})
    assert "warming green up before its first step to 10%" in lines
