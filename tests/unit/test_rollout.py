"""The pure state machine: phases, transitions, actions, refusals."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bgserve.domain import rollout
from bgserve.domain.rollout import (
    DeploymentState,
    EnsureSlot,
    Gate,
    MoveAliases,
    Phase,
    RetireSlot,
    Route,
    SetRoutes,
)
from bgserve.errors import Conflict, GateClosed, IllegalTransition, InvalidInput


def staged(blue: int = 1, green: int = 2, passed: bool = True) -> DeploymentState:
    state = rollout.stage_green(rollout.create("chat", blue).state, green).state
    gate = Gate(blue, green, passed, () if passed else ("bad",))
    return rollout.record_gate(state, gate, {"cases": []}).state


def test_create_deploys_blue_at_100_and_points_aliases() -> None:
    t = rollout.create("chat", 7)
    assert t.state.phase is Phase.STABLE
    assert t.state.routes() == (Route("blue", 7, 100),)
    assert t.actions == (EnsureSlot(7), SetRoutes((Route("blue", 7, 100),)), MoveAliases(7, None))


def test_stage_green_starts_slot_before_routing_it_at_zero() -> None:
    t = rollout.stage_green(rollout.create("chat", 1).state, 2)
    assert t.state.phase is Phase.STAGED
    assert t.actions == (EnsureSlot(2), SetRoutes((Route("blue", 1, 100), Route("green", 2, 0))))


def test_stage_same_green_is_a_no_op() -> None:
    state = staged()
    t = rollout.stage_green(state, 2)
    assert not t.changed and t.state == state and t.actions == ()


def test_stage_refused_while_green_takes_traffic() -> None:
    state = rollout.shift(staged(), 30).state
    with pytest.raises(IllegalTransition, match=r"takes 30%.*promote it to 100 or revert"):
        rollout.stage_green(state, 3)


def test_stage_blue_release_as_green_is_refused() -> None:
    with pytest.raises(IllegalTransition, match="already blue"):
        rollout.stage_green(rollout.create("chat", 1).state, 1)


def test_new_green_retires_idle_green_and_standby() -> None:
    state = rollout.stage_green(staged(), 3)
    assert RetireSlot(2) in state.actions
    after_promote = rollout.shift(staged(), 100).state
    t = rollout.stage_green(after_promote, 5)
    assert t.state.standby is None
    assert t.actions[-1] == RetireSlot(1)


def test_shift_moves_weights_and_phase() -> None:
    t = rollout.shift(staged(), 30)
    assert t.state.phase is Phase.SHIFTING
    assert (t.state.blue_weight, t.state.green_weight) == (70, 30)
    assert t.actions == (SetRoutes((Route("blue", 1, 70), Route("green", 2, 30))),)


def test_shift_to_100_promotes_and_keeps_standby() -> None:
    t = rollout.shift(rollout.shift(staged(), 50).state, 100)
    assert t.action == "promote"
    s = t.state
    assert (s.blue, s.green, s.standby, s.phase) == (2, None, 1, Phase.STABLE)
    assert t.actions == (
        SetRoutes((Route("blue", 2, 100), Route("standby", 1, 0))),
        MoveAliases(2, 1),
    )


@pytest.mark.parametrize("weight", [-1, 101])
def test_shift_out_of_range_names_the_field(weight: int) -> None:
    with pytest.raises(InvalidInput) as info:
        rollout.shift(staged(), weight)
    assert info.value.field == "weight"


def test_promote_without_green_says_how_to_stage() -> None:
    with pytest.raises(IllegalTransition, match=r"no green release: stage one") as caught:
        rollout.shift(rollout.create("chat", 1).state, 10)
    assert caught.value.hint == "stage" and "POST" not in caught.value.message


def test_gate_missing_failed_or_for_another_pair_closes() -> None:
    fresh = rollout.stage_green(rollout.create("chat", 1).state, 2).state
    with pytest.raises(GateClosed, match="no comparison"):
        rollout.shift(fresh, 10)
    with pytest.raises(GateClosed, match="failed: bad"):
        rollout.shift(staged(passed=False), 10)
    other_pair = replace(fresh, gate=Gate(1, 9, True))
    with pytest.raises(GateClosed):
        rollout.shift(other_pair, 10)


def test_recording_a_gate_for_a_pair_that_changed_is_refused() -> None:
    fresh = rollout.stage_green(rollout.create("chat", 1).state, 2).state
    with pytest.raises(Conflict, match="changed during the comparison") as caught:
        rollout.record_gate(fresh, Gate(1, 9, True), {"cases": []})
    assert caught.value.hint == "compare"
    recorded = rollout.record_gate(fresh, Gate(1, 2, False, ("bad",)), {"cases": [{}, {}]})
    assert recorded.reason == "comparison of 2 cases failed: bad"
    assert recorded.report == {"cases": [{}, {}]} and recorded.state.gate == Gate(
        1, 2, False, ("bad",)
    )


def test_force_opens_gate_and_shifting_down_needs_no_gate() -> None:
    fresh = rollout.stage_green(rollout.create("chat", 1).state, 2).state
    up = rollout.shift(fresh, 40, force=True).state
    assert rollout.shift(up, 20).state.green_weight == 20


def test_revert_during_shift_sends_green_to_zero_and_is_idempotent() -> None:
    t = rollout.revert(rollout.shift(staged(), 50).state)
    assert t.state.phase is Phase.REVERTED and t.state.green == 2
    assert t.actions == (SetRoutes((Route("blue", 1, 100), Route("green", 2, 0))),)
    again = rollout.revert(t.state)
    assert not again.changed and again.state == t.state


def test_revert_after_cutover_restores_standby_as_blue() -> None:
    promoted = rollout.shift(staged(), 100).state
    t = rollout.revert(promoted)
    s = t.state
    assert (s.blue, s.green, s.green_weight, s.standby) == (1, 2, 0, None)
    assert MoveAliases(1, 2) in t.actions
    assert not rollout.revert(s).changed


def test_the_pair_and_the_gate_of_the_current_pair_follow_blue_and_green() -> None:
    state = staged(1, 2)
    assert state.pair is not None and (state.pair.blue, state.pair.green) == (1, 2)
    assert state.gate is not None and state.gate.pair == state.pair
    assert state.gate_for_current_pair() is state.gate and not state.gate_is_stale
    restaged = rollout.stage_green(state, 3).state
    assert restaged.pair is not None and restaged.pair != state.pair
    assert restaged.gate_for_current_pair() is None and restaged.gate_is_stale
    assert rollout.create("chat", 1).state.pair is None


def test_each_phase_says_why() -> None:
    stable = rollout.create("chat", 1).state
    assert "blue release 1 takes all traffic" in stable.phase_reason
    state = staged(1, 2)
    assert "green release 2 is staged at 0%" in state.phase_reason
    shifted = rollout.shift(state, 30).state
    assert shifted.phase is Phase.SHIFTING and "takes 30%" in shifted.phase_reason
    reverted = rollout.revert(shifted).state
    assert reverted.phase is Phase.REVERTED and "after a revert" in reverted.phase_reason
