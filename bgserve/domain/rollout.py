"""The deployment state machine. Pure: no I/O, no clock, no backend.

A deployment holds one live release (blue) and at most one candidate (green), plus
a standby (the previous blue, kept running after a cutover for an instant revert).
Green and standby are never both set: staging a new green retires the standby.

Each transition takes a state and returns a :class:`Transition`: the new state, the
actions an executor must perform (in order) and a one-line reason for the history.
The phase is derived from the state, never stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bgserve.domain.state import (
    Action,
    DeploymentState,
    EnsureSlot,
    Gate,
    MoveAliases,
    Phase,
    RetireSlot,
    Route,
    SetRoutes,
    Transition,
    observation,
    unchanged,
)
from bgserve.errors import Conflict, GateClosed, IllegalTransition, InvalidInput

__all__ = [
    "Action",
    "DeploymentState",
    "EnsureSlot",
    "Gate",
    "MoveAliases",
    "Phase",
    "RetireSlot",
    "Route",
    "SetRoutes",
    "Transition",
    "observation",
    "unchanged",
]


def create(name: str, release_id: int) -> Transition:
    """A new deployment: ``release_id`` as blue at weight 100."""
    state = DeploymentState(name=name, blue=release_id)
    actions = (EnsureSlot(release_id), SetRoutes(state.routes()), MoveAliases(release_id, None))
    return Transition("create", state, actions, f"release {release_id} deployed as blue")


def stage_green(state: DeploymentState, release_id: int) -> Transition:
    """Deploy ``release_id`` as green at weight 0, replacing an earlier idle green.

    Refused while green takes traffic or a step plan is under way.
    """
    if state.plan is not None:
        raise IllegalTransition(
            f"a promotion of {state.name} is under way ({describe_plan(state)}): "
            "wait for it to finish, or revert before staging another release",
            hint="revert",
        )
    if state.green_weight > 0:
        raise IllegalTransition(
            f"green release {state.green} takes {state.green_weight}% of {state.name}'s traffic: "
            "promote it to 100 or revert before staging another release",
            hint="revert",
        )
    if release_id == state.blue:
        raise IllegalTransition(
            f"release {release_id} is already blue on {state.name}: stage a different release",
            hint="stage",
        )
    if release_id == state.green:
        return unchanged(state, "stage", f"release {release_id} is already green")
    new = replace(state, green=release_id, green_weight=0, standby=None, reverted=False)
    retired = [r for r in (state.green, state.standby) if r is not None and r != release_id]
    actions: list[Action] = [EnsureSlot(release_id), SetRoutes(new.routes())]
    actions += [RetireSlot(r) for r in retired]
    return Transition("stage", new, tuple(actions), f"release {release_id} staged as green at 0%")


def shift(state: DeploymentState, weight: int, *, force: bool = False) -> Transition:
    """Give green ``weight`` percent of the traffic; 100 cuts over (see :func:`promote`).

    Moving traffic towards green needs a passing comparison of this exact pair unless
    ``force`` is set. Refused while a step plan is under way.
    """
    if state.plan is not None:
        raise IllegalTransition(
            f"a promotion of {state.name} is under way ({describe_plan(state)}): "
            "wait for it to finish, or revert",
            hint="wait",
        )
    moved = _shift(state, weight, force=force)
    return replace(moved, details={"force": True}) if force and moved.changed else moved


def describe_plan(state: DeploymentState) -> str:
    """Where the plan of ``state`` stands, for messages."""
    plan = state.plan
    if plan is None:
        return "no plan"
    where = f"step {plan.step_index + 1} of {len(plan.steps)}, steps {list(plan.steps)}"
    return f"{where}, held: {plan.held}" if plan.held else where


def move_green(state: DeploymentState, weight: int) -> Transition:
    """Move green to ``weight`` without the gate (a plan's step; the plan checked it)."""
    return _shift(state, weight, force=True)


def require_green(state: DeploymentState) -> int:
    """Green's release id. Raises IllegalTransition (hint: stage) when there is none."""
    return _require_green(state)


def _require_green(state: DeploymentState) -> int:
    if state.green is None:
        raise IllegalTransition(
            f"{state.name} has no green release: stage one before promoting", hint="stage"
        )
    return state.green


def _shift(state: DeploymentState, weight: int, *, force: bool) -> Transition:
    if not 0 <= weight <= 100:
        raise InvalidInput(f"weight {weight} is out of range: use 0 to 100", field="weight")
    green = _require_green(state)
    if weight == state.green_weight:
        return unchanged(state, "shift", f"green already at {weight}%")
    if weight > state.green_weight and not force:
        check_gate(state)
    if weight == 100:
        return promote(state)
    new = replace(state, green_weight=weight, reverted=False)
    return Transition(
        "shift",
        new,
        (SetRoutes(new.routes()),),
        f"green {green} from {state.green_weight}% to {weight}%",
    )


def check_gate(state: DeploymentState) -> None:
    """Raise :class:`GateClosed` unless the current pair has a passing comparison."""
    gate = state.gate_for_current_pair()
    if gate is None:
        raise GateClosed(
            f"green release {state.green} of {state.name} has no comparison against blue "
            f"release {state.blue}: compare them first, or force the step",
            details={"reasons": ["no comparison for the current blue/green pair"]},
            hint="compare",
        )
    if not gate.passed:
        raise GateClosed(
            f"the last comparison of {state.name} failed: "
            + "; ".join(gate.reasons)
            + " (fix green, or force the step)",
            details={"reasons": list(gate.reasons)},
            hint="force",
        )
    if gate.loosened:
        raise GateClosed(
            f"the last comparison of {state.name} passed only on per-call thresholds looser "
            f"than the server's: {_loosened(gate)}; force the step, or configure these "
            "thresholds server-side (BGSERVE_COMPARE_THRESHOLDS) and compare again",
            details={"loosened_thresholds": loosened_details(gate)},
            hint="force",
        )


def loosened_details(gate: Gate) -> dict[str, dict[str, float]]:
    """The loosened thresholds of ``gate`` by name, for errors and the history."""
    return {t.name: {"used": t.used, "configured": t.configured} for t in gate.loosened}


def _loosened(gate: Gate) -> str:
    return ", ".join(t.describe() for t in gate.loosened)


def promote(state: DeploymentState) -> Transition:
    """Cut over: green becomes blue at 100, the old blue becomes the standby."""
    green = _require_green(state)
    new = replace(
        state,
        blue=green,
        green=None,
        green_weight=0,
        standby=state.blue,
        reverted=False,
        plan=None,
    )
    actions = (SetRoutes(new.routes()), MoveAliases(new.blue, state.blue))
    return Transition(
        "promote",
        new,
        actions,
        f"release {green} promoted to blue at 100%; release {state.blue} kept as standby",
    )


def revert(state: DeploymentState) -> Transition:
    """All traffic back to the last good release, from any phase. Idempotent.

    During a shift, green drops to 0 (and stays deployed). After a cutover, the
    standby becomes blue again and the release it replaced is kept as green at 0. A
    plan's baseline slot, if it has one, is retired.
    """
    reverted = _revert(state)
    if state.baseline is None:
        return reverted
    return replace(reverted, actions=(*reverted.actions, RetireSlot(state.baseline)))


def _revert(state: DeploymentState) -> Transition:
    if state.green is not None and (state.green_weight > 0 or state.plan is not None):
        new = replace(state, green_weight=0, reverted=True, plan=None)
        return Transition(
            "revert",
            new,
            (SetRoutes(new.routes()),),
            f"green {state.green} from {state.green_weight}% back to 0%; "
            f"blue {state.blue} takes all traffic",
        )
    if state.green is None and state.standby is not None:
        new = replace(
            state,
            blue=state.standby,
            green=state.blue,
            green_weight=0,
            standby=None,
            reverted=True,
            plan=None,
        )
        actions = (SetRoutes(new.routes()), MoveAliases(new.blue, state.blue))
        return Transition(
            "revert",
            new,
            actions,
            f"release {state.standby} back to blue at 100%; "
            f"release {state.blue} kept as green at 0%",
        )
    return Transition(
        "revert",
        replace(state, plan=None),
        reason=f"blue {state.blue} already takes all traffic",
        changed=state.plan is not None,
    )


def record_gate(state: DeploymentState, gate: Gate, report: Mapping[str, Any]) -> Transition:
    """Store a comparison's outcome and report for the pair it compared.

    Refused (Conflict) when blue or green changed while the comparison ran: its verdict
    would concern a pair that no longer exists.
    """
    if state.pair != gate.pair:
        raise Conflict(
            f"{state.name} changed during the comparison (blue {state.blue}, green "
            f"{state.green}): compare again",
            hint="compare",
        )
    verdict = "passed" if gate.passed else "failed: " + "; ".join(gate.reasons)
    if gate.passed and gate.loosened:
        verdict += (
            f" on per-call thresholds looser than the server's ({_loosened(gate)}); "
            "promoting on it needs force"
        )
    cases = report.get("cases")
    count = len(cases) if isinstance(cases, list) else 0
    return Transition(
        "compare",
        replace(state, gate=gate),
        reason=f"comparison of {count} cases {verdict}",
        report=report,
    )
