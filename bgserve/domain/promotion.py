"""Promotion plans on a deployment: start one, advance it, resume a held one.

Pure transitions, like :mod:`bgserve.domain.rollout`. The rollout engine calls
:func:`advance` for every deployment with a plan, with the traffic of the current
step's window and the time; an operator's promote starts a plan or resumes a held one,
and a revert (at any moment) drops it. What a plan needs when is decided by
:func:`bgserve.domain.plan.due`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bgserve.domain.analysis import Check
from bgserve.domain.plan import Due, Plan, due, remaining_from, resume
from bgserve.domain.rollout import (
    DeploymentState,
    Transition,
    check_gate,
    describe_plan,
    move_green,
    require_green,
    revert,
    unchanged,
)
from bgserve.domain.state import Action, EnsureSlot, RetireSlot, SetRoutes
from bgserve.domain.window import SideWindow
from bgserve.errors import IllegalTransition, InvalidInput


def start(state: DeploymentState, plan: Plan, now: float) -> Transition:
    """Store ``plan`` and apply its first step (or, when green needs a warm-up, store it
    for the rollout engine to warm green and then apply it); on a held plan, an
    operator's go-ahead.

    Needs a passing comparison of the current pair unless the plan is forced. Refused
    while a plan runs (a revert stops it).
    """
    if state.plan is not None:
        if state.plan.held:
            why = f"resumed by an operator after: {state.plan.held}"
            return _apply_step(replace(state, plan=resume(state.plan)), now, why)
        raise IllegalTransition(
            f"a promotion of {state.name} is already under way ({describe_plan(state)}): "
            "wait for it, or revert",
            hint="wait",
        )
    require_green(state)
    if not plan.force:
        check_gate(state)
    planned = remaining_from(plan, state.green_weight)
    details: dict[str, Any] = {
        "steps": list(planned.steps),
        "bake_s": planned.bake_s,
        "force": plan.force,
    }
    why = f"promotion plan {list(planned.steps)} started, {planned.bake_s:g}s bake per step"
    if planned.compare_with == "baseline":
        baseline = _require_baseline(planned)
        details["baseline_release"] = baseline
        why += f"; green analysed against baseline release {baseline} (a fresh copy of blue)"
    if planned.needs_warmup:
        details["warmup"] = {"requests": planned.warmup.requests}
        why += f"; green is warmed up with {planned.warmup.requests} requests first"
        waiting = replace(state, plan=planned)
        actions = _baseline_routes(waiting)
        return Transition("plan", waiting, actions, reason=why, details=details)
    return _apply_step(replace(state, plan=planned), now, why, details)


def _require_baseline(plan: Plan) -> int:
    if plan.baseline_release is None:
        raise InvalidInput(
            "plan.compare_with is baseline but no baseline release was made for it: start "
            "the plan through the service, which registers one",
            field="plan.compare_with",
        )
    return plan.baseline_release


def _baseline_routes(state: DeploymentState) -> tuple[Action, ...]:
    """Start the baseline's slot and route it its share (none while it waits for the
    warm-up); nothing without a baseline."""
    if state.baseline is None:
        return ()
    return (EnsureSlot(state.baseline), SetRoutes(state.routes()))


def warmed_up(state: DeploymentState, now: float, summary: Mapping[str, Any]) -> Transition:
    """Green's warm-up is over (``summary``: what was sent, answered, failed, how long):
    apply the plan's first step. Unchanged when no warm-up is due any more (a revert or
    another operation came first)."""
    plan = state.plan
    if plan is None or not plan.needs_warmup:
        return unchanged(state, "plan", "no warm-up due")
    sent, failed = summary.get("sent", 0), summary.get("failed", 0)
    why = f"green warmed up ({sent} requests, {failed} failed, none counted)"
    if summary.get("skipped"):
        why = f"no warm-up of green ({summary['skipped']})"
    # Applying the first step is what ends the warm-up (needs_warmup is derived from it).
    return _apply_step(state, now, why, {"warmup": dict(summary)})


def advance(
    state: DeploymentState,
    blue: SideWindow | None,
    green: SideWindow | None,
    now: float,
    extra: tuple[Check, ...] = (),
    window_since: float | None = None,
) -> Transition:
    """What the plan of ``state`` needs at ``now``, as a transition (unchanged if nothing).

    ``blue`` and ``green`` are the traffic of the current step's window (None when the
    counts could not be read: the step then cannot pass), first read at ``window_since``
    (see :func:`bgserve.domain.plan.due`). A warm-up is the engine's to do: until it
    reports with :func:`warmed_up`, nothing changes.
    """
    if state.plan is None:
        return unchanged(state, "plan", "no plan under way")
    decision = due(state.plan, blue, green, now, extra, window_since)
    details = _details(decision)
    if decision.kind in ("nothing", "warmup"):
        return unchanged(state, "plan", decision.reason)
    if decision.kind == "revert":
        reverted = revert(state)
        reason = f"{decision.reason}; {reverted.reason}"
        return replace(reverted, action="auto-revert", reason=reason, details=details)
    planned = replace(state, plan=decision.plan or state.plan)
    if decision.kind in ("analysis", "hold"):
        return Transition(decision.kind, planned, reason=decision.reason, details=details)
    return _apply_step(planned, now, decision.reason, details)


def _apply_step(
    state: DeploymentState, now: float, why: str, details: dict[str, Any] | None = None
) -> Transition:
    """Move green to the current step's weight; at 100 that is the cutover, ending the plan."""
    plan = state.plan
    if plan is None:  # the callers always pass a plan; this keeps the types honest
        return unchanged(state, "plan", "no plan under way")
    moved = move_green(replace(state, plan=None), plan.weight)
    if plan.weight < 100:
        started = replace(moved.state, plan=replace(plan, step_started_at=now))
        # Green may already be at this step's weight (a 0% shadow step): the plan's
        # progress is still a change to store.
        moved = replace(moved, state=started, changed=True)
        if started.baseline is not None:
            kept = tuple(a for a in moved.actions if not isinstance(a, SetRoutes))
            moved = replace(moved, actions=(*_baseline_routes(started), *kept))
    elif plan.baseline_release is not None:
        moved = replace(moved, actions=(*moved.actions, RetireSlot(plan.baseline_release)))
    action = "promote" if plan.weight == 100 else "shift"
    return replace(moved, action=action, reason=f"{why}: {moved.reason}", details=details or {})


def _details(decision: Due) -> dict[str, Any]:
    if decision.analysis is None or decision.plan is None:
        return {}
    last = decision.plan.last_analysis
    return {"analysis": dict(last)} if last is not None else {}
