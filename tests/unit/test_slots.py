"""The pure slot-life rules: a slot lost, restarted, abandoned; the standby retired early."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bgserve.domain import rollout, slots
from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.plan import make_plan
from bgserve.domain.rollout import DeploymentState, Gate, RetireSlot, Route, SetRoutes
from bgserve.errors import IllegalTransition


def shifting(weight: int = 30) -> DeploymentState:
    state = rollout.stage_green(rollout.create("chat", 1).state, 2).state
    state = replace(state, gate=Gate(1, 2, True))
    return rollout.shift(state, weight).state if weight else state


def test_green_lost_while_taking_traffic_reverts_and_names_the_slot() -> None:
    t = slots.on_slot_lost(shifting(30), 2)
    assert t.changed and t.action == "revert"
    assert t.state.green_weight == 0 and t.state.reverted
    assert t.actions == (SetRoutes((Route("blue", 1, 100), Route("green", 2, 0))),)
    assert t.details == {"slot_lost": 2}
    assert t.reason.startswith("green release 2's slot died at 30%")


def test_green_lost_during_a_plan_at_zero_drops_the_plan() -> None:
    planned = replace(shifting(0), plan=make_plan([10, 100], 30.0, AnalysisSettings()))
    t = slots.on_slot_lost(planned, 2)
    assert t.changed and t.state.plan is None


@pytest.mark.parametrize(("weight", "lost", "role"), [(30, 1, "blue"), (0, 2, "green")])
def test_other_losses_change_nothing_but_are_recorded(weight: int, lost: int, role: str) -> None:
    state = shifting(weight)
    t = slots.on_slot_lost(state, lost)
    assert not t.changed and t.record and t.state == state and t.actions == ()
    assert t.reason == f"{role} release {lost}'s slot died; weights unchanged"


def test_restarted_slot_is_routed_by_the_stored_weights() -> None:
    state = shifting(30)
    t = slots.slot_restarted(state, 2, "http://127.0.0.1:9")
    assert not t.changed and t.record
    assert t.actions == (SetRoutes(state.routes()),)
    assert "http://127.0.0.1:9" in t.reason


def test_restarted_slot_of_a_release_gone_meanwhile_is_retired_silently() -> None:
    state = shifting(0)
    t = slots.slot_restarted(state, 7, "http://127.0.0.1:9")
    assert t.actions == (RetireSlot(7),) and not t.record and not t.changed


def test_restart_allowed_stops_a_crash_loop_and_forgets_old_restarts() -> None:
    recent: tuple[float, ...] = ()
    verdicts = []
    for now in (0.0, 1.0, 2.0, 3.0):
        allowed, recent = slots.restart_allowed(recent, now, limit=3, window=60.0)
        verdicts.append(allowed)
    assert verdicts == [True, True, True, False]
    assert recent == (0.0, 1.0, 2.0)
    allowed, recent = slots.restart_allowed(recent, 60.5, limit=3, window=60.0)
    assert allowed and recent == (1.0, 2.0, 60.5)  # the restart at 0.0 left the window
    assert not slots.restart_allowed(recent, 60.6, limit=3, window=60.0)[0]


def test_abandoned_and_failed_restarts_are_observations() -> None:
    state = shifting(0)
    abandoned = slots.restart_abandoned(state, 2, 5, 300.0)
    failed = slots.restart_failed(state, 2, "boom")
    for t in (abandoned, failed):
        assert not t.changed and t.record and t.details == {"release_id": 2}
    assert "5 times within 300s" in abandoned.reason
    assert failed.reason == "restart failed: boom"


def test_retire_standby_routes_it_out_then_retires_it_and_is_refused_during_a_plan() -> None:
    promoted = rollout.shift(shifting(30), 100).state
    t = slots.retire_standby(promoted)
    assert t.state.standby is None
    assert t.actions == (SetRoutes((Route("blue", 2, 100),)), RetireSlot(1))
    assert not slots.retire_standby(t.state).changed
    with pytest.raises(IllegalTransition, match="under way"):
        slots.retire_standby(replace(promoted, plan=make_plan([100], 0.0, AnalysisSettings())))
