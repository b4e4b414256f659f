"""The one write path on the in-memory backend and a real SQLite store: the order of steps,
compensation when a step fails, stale writes, follow-ups, and recovery's decisions."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bgserve.app.engine import RolloutEngine
from bgserve.app.executor import SYSTEM, Executor
from bgserve.app.recovery import Recovery
from bgserve.app.service import Service
from bgserve.domain import rollout
from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.plan import make_plan
from bgserve.domain.rollout import Gate
from bgserve.errors import BackendError, Conflict, StaleWrite
from bgserve.store import Store
from tests.support.executor_parts import (
    Aliases,
    Clock,
    FlakyRoutes,
    Traffic,
    bake_in_ticks,
    shifted_to,
)


@pytest.fixture
def backend() -> FlakyRoutes:
    return FlakyRoutes()


@pytest.fixture
def aliases() -> Aliases:
    return Aliases()


@pytest.fixture
def executor(store: Store, backend: FlakyRoutes, aliases: Aliases) -> Executor:
    return Executor(store, backend, aliases, clock=Clock(), lock_timeout=1.0)


def test_steps_run_in_order_act_persist_follow_up(
    executor: Executor, backend: FlakyRoutes, aliases: Aliases, store: Store
) -> None:
    executor.create(rollout.create("chat", 1), "alice")
    assert [c.method for c in backend.method_calls("ensure_slot", "set_routes")] == [
        "ensure_slot",
        "set_routes",
    ]
    assert aliases.moves == [("chat", 1, None)]
    assert [(e.action, e.principal) for e in store.history("chat")] == [("create", "alice")]


def test_a_failed_route_step_retires_the_slot_it_started_and_records_nothing(
    executor: Executor, backend: FlakyRoutes, store: Store
) -> None:
    backend.route_failures = 1
    with pytest.raises(BackendError, match="belongs to someone else"):
        executor.create(rollout.create("chat", 1), "alice")
    assert backend.slots() == {}
    assert store.list_deployments() == []


def test_a_failed_stage_leaves_traffic_and_slots_as_they_were(
    executor: Executor, backend: FlakyRoutes, store: Store
) -> None:
    executor.create(rollout.create("chat", 1), "alice")
    backend.route_failures = 1
    with pytest.raises(BackendError):
        executor.run("chat", "alice", lambda s: rollout.stage_green(s, 2))
    assert backend.weights("chat") == {1: 100}
    assert backend.slots() == {("chat", 1): True}
    assert store.get_deployment("chat").state.green is None


def test_a_stale_write_puts_traffic_back_as_stored(
    executor: Executor, backend: FlakyRoutes, store: Store
) -> None:
    shifted_to(executor, 10)
    stored = store.get_deployment("chat")

    def decide_then_lose_the_race(state: rollout.DeploymentState) -> rollout.Transition:
        store.save_deployment(
            stored.state,
            replace(stored.state, green_weight=20),
            now=Clock()(),
            principal="bob",
            action="shift",
            reason="bob won",
        )
        return rollout.shift(state, 50)

    with pytest.raises(StaleWrite):
        executor.run("chat", "alice", decide_then_lose_the_race)
    assert backend.weights("chat") == {1: 80, 2: 20}  # bob's weights, not alice's 50


def test_undo_failing_keeps_the_original_error(
    executor: Executor, backend: FlakyRoutes, store: Store
) -> None:
    executor.create(rollout.create("chat", 1), "alice")
    backend.route_failures = 2  # the stage's route step, then the undo's
    with pytest.raises(BackendError, match="belongs to someone else"):
        executor.run("chat", "alice", lambda s: rollout.stage_green(s, 2))
    assert ("chat", 2) not in backend.slots()


def test_a_failed_follow_up_is_recorded_and_the_change_stands(
    executor: Executor, aliases: Aliases, store: Store
) -> None:
    shifted_to(executor, 50)
    aliases.fail = True
    promoted = executor.run("chat", "alice", lambda s: rollout.shift(s, 100))
    assert promoted.state.blue == 2
    last = store.history("chat")[-1]
    assert (last.action, last.principal) == ("follow-up-failed", SYSTEM)
    assert "MLflow is down" in last.reason


def test_a_comparison_of_a_pair_that_changed_is_refused(executor: Executor, store: Store) -> None:
    executor.create(rollout.create("chat", 1), "alice")
    executor.run("chat", "alice", lambda s: rollout.stage_green(s, 2))
    stale = Gate(1, 3, True)
    with pytest.raises(Conflict, match="changed during the comparison"):
        executor.run("chat", "alice", lambda s: rollout.record_gate(s, stale, {"cases": []}))
    assert store.get_deployment("chat").state.gate is None


def plan_service(executor: Executor, backend: FlakyRoutes, store: Store) -> Service:
    return Service(
        store,
        registry=None,  # type: ignore[arg-type]  # no registration in these tests
        backend=backend,
        executor=executor,
        default_plan=make_plan([10, 50, 100], 30.0, AnalysisSettings(min_requests=20)),
        wall_clock=lambda: 1000.0,
    )


def test_the_engine_walks_a_healthy_plan_on_an_injected_clock(
    executor: Executor, backend: FlakyRoutes, store: Store
) -> None:
    shifted_to(executor, 0)
    traffic, now = Traffic(), [1000.0]
    engine = RolloutEngine(executor, store, traffic, interval=1.0, clock=lambda: now[0])
    started = plan_service(executor, backend, store).start_plan("chat", "alice")
    assert started.state.green_weight == 10 and backend.weights("chat") == {1: 90, 2: 10}
    engine.tick()  # the step's baseline
    for weight in (50, 100):
        bake_in_ticks(engine, now, now[0] + 29.0, traffic.adding({1: 20, 2: 5}))
        assert store.get_deployment("chat").state.green_weight == (10 if weight == 50 else 50)
        now[0] += 1.0
        engine.tick()
        if weight == 50:
            assert backend.weights("chat") == {1: 50, 2: 50}
            engine.tick()  # the new step's baseline
    done = store.get_deployment("chat").state
    assert (done.blue, done.standby, done.plan) == (2, 1, None)
    automatic = [e.action for e in store.history("chat") if e.principal == SYSTEM]
    assert automatic == ["shift", "promote"]


def test_the_engine_reverts_a_failing_green_with_the_numbers(
    executor: Executor, backend: FlakyRoutes, store: Store
) -> None:
    shifted_to(executor, 0)
    traffic, now = Traffic(), [1000.0]
    engine = RolloutEngine(executor, store, traffic, interval=1.0, clock=lambda: now[0])
    plan_service(executor, backend, store).start_plan("chat", "alice")
    engine.tick()
    traffic.add(1, 300, errors=1)
    traffic.add(2, 40, errors=9)
    now[0] += 30.0
    engine.tick()
    state = store.get_deployment("chat").state
    assert (state.green_weight, state.plan) == (0, None)
    assert backend.weights("chat") == {1: 100, 2: 0}
    last = store.history("chat")[-1]
    assert (last.action, last.principal) == ("auto-revert", SYSTEM)
    assert last.details is not None
    error_rate = last.details["analysis"]["checks"][0]
    assert (error_rate["green_errors"], error_rate["green_requests"]) == (9, 40)


def test_recovery_reverts_a_lost_green_restarts_it_and_records_both(
    executor: Executor, backend: FlakyRoutes, store: Store
) -> None:
    shifted_to(executor, 30)
    recovery = Recovery(executor, store, store, backend, restart_limit=2, restart_window=60)
    backend.watch_slots(recovery.slot_lost)
    backend.kill("chat", 2)
    assert recovery.wait_idle(5)
    state = store.get_deployment("chat").state
    assert (state.green, state.green_weight) == (2, 0)
    assert backend.slots()[("chat", 2)] is True
    assert backend.weights("chat") == {1: 100, 2: 0}
    actions = [(e.action, e.principal) for e in store.history("chat")][-2:]
    assert actions == [("revert", SYSTEM), ("slot-restarted", SYSTEM)]


def test_recovery_gives_up_on_a_crash_loop(
    executor: Executor, backend: FlakyRoutes, store: Store
) -> None:
    shifted_to(executor, 0)
    recovery = Recovery(executor, store, store, backend, restart_limit=1, restart_window=60)
    backend.watch_slots(recovery.slot_lost)
    for _ in range(2):
        backend.kill("chat", 1)
        assert recovery.wait_idle(5)
    assert store.history("chat")[-1].action == "restart-abandoned"


def test_recovery_after_close_starts_nothing_and_records_no_failure(
    executor: Executor, backend: FlakyRoutes, store: Store
) -> None:
    shifted_to(executor, 0)
    recovery = Recovery(executor, store, store, backend, restart_limit=2, restart_window=60)
    backend.watch_slots(recovery.slot_lost)
    assert recovery.close(timeout=1)
    before = len(store.history("chat"))
    backend.kill("chat", 2)
    assert recovery.wait_idle(1)
    assert len(store.history("chat")) == before
    assert backend.slots()[("chat", 2)] is False
