"""Transitions about a slot's life: one that died on its own, a standby retired early.

Pure, like :mod:`bgserve.domain.rollout`, whose states and actions they use.
"""

from __future__ import annotations

from dataclasses import replace

from bgserve.domain.rollout import (
    DeploymentState,
    RetireSlot,
    SetRoutes,
    Transition,
    revert,
)
from bgserve.errors import IllegalTransition


def on_slot_lost(state: DeploymentState, release_id: int) -> Transition:
    """What to do when the slot of ``release_id`` died on its own.

    The rule: if the lost slot is green while it takes traffic or a step plan runs, revert
    (green to 0%, plan dropped) so traffic never moves towards a side that is down.
    Anything else (blue, the standby, an idle green) changes nothing in the stored state:
    the router already routes around the dead slot and the slot is restarted.
    """
    if release_id == state.green and (state.green_weight > 0 or state.plan):
        reverted = revert(state)
        return replace(
            reverted,
            reason=f"green release {release_id}'s slot died at {state.green_weight}%: "
            + reverted.reason,
        )
    role = _role_of(state, release_id)
    return Transition(
        "slot-lost",
        state,
        reason=f"{role} release {release_id}'s slot died; weights unchanged",
        changed=False,
    )


def _role_of(state: DeploymentState, release_id: int) -> str:
    for route in state.routes():
        if route.release_id == release_id:
            return route.role
    return "unrouted"


def retire_standby(state: DeploymentState) -> Transition:
    """Retire the standby slot early, giving up the instant revert to it.

    Refused while a step plan runs (a revert may need the standby soon after).
    """
    if state.standby is None:
        return Transition("retire", state, reason="no standby to retire", changed=False)
    if state.plan:
        raise IllegalTransition(
            f"a promotion of {state.name} is under way: wait for it before retiring the standby"
        )
    new = replace(state, standby=None)
    return Transition(
        "retire",
        new,
        (SetRoutes(new.routes()), RetireSlot(state.standby)),
        f"standby release {state.standby} retired; revert to it is no longer possible",
    )


class RestartBudget:
    """At most ``limit`` restarts of one slot within ``window`` seconds: a crash loop stops.

    Pure: the caller passes the current (monotonic) time.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._restarts: dict[tuple[str, int], list[float]] = {}

    def allow(self, deployment: str, release_id: int, now: float) -> bool:
        """Whether the slot may be restarted now; counts the restart when it may."""
        key = (deployment, release_id)
        recent = [t for t in self._restarts.get(key, []) if now - t < self.window]
        allowed = len(recent) < self.limit
        if allowed:
            recent.append(now)
        self._restarts[key] = recent
        return allowed
