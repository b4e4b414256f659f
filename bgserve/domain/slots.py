"""Transitions about a slot's life: one that died on its own, its restart, a standby
retired early; and the crash-loop rule that stops restarting a slot.

Pure, like :mod:`bgserve.domain.rollout`, whose states and actions they use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bgserve.domain.rollout import (
    DeploymentState,
    RetireSlot,
    SetRoutes,
    Transition,
    observation,
    revert,
    unchanged,
)
from bgserve.errors import IllegalTransition


def on_slot_lost(state: DeploymentState, release_id: int) -> Transition:
    """What to do when the slot of ``release_id`` died on its own (or was ejected).

    The rule: if the lost slot is green while it takes traffic or a step plan runs, revert
    (green to 0%, plan dropped) so traffic never moves towards a side that is down.
    Anything else (blue, the standby, an idle green) changes nothing in the stored state:
    the router already routes around the dead slot and the slot is restarted. Either way
    the history records it.
    """
    details = {"slot_lost": release_id}
    if release_id == state.green and (state.green_weight > 0 or state.plan is not None):
        reverted = revert(state)
        return replace(
            reverted,
            reason=f"green release {release_id}'s slot died at {state.green_weight}%: "
            + reverted.reason,
            details=details,
        )
    role = role_of(state, release_id)
    reason = f"{role} release {release_id}'s slot died; weights unchanged"
    return observation(state, "slot-lost", reason, details)


def role_of(state: DeploymentState, release_id: int) -> str:
    """``blue``, ``green`` or ``standby``; ``unrouted`` for a release the state does not hold."""
    for route in state.routes():
        if route.release_id == release_id:
            return route.role
    return "unrouted"


def routed(state: DeploymentState, release_id: int) -> bool:
    """Whether the deployment still holds a slot for ``release_id``."""
    return role_of(state, release_id) != "unrouted"


def slot_restarted(state: DeploymentState, release_id: int, endpoint: str) -> Transition:
    """A lost slot runs again: route by the stored weights, or retire it if meanwhile the
    deployment let go of its release."""
    if not routed(state, release_id):
        return Transition(
            "slot-restarted",
            state,
            (RetireSlot(release_id),),
            reason=f"release {release_id} left the deployment while its slot restarted",
            changed=False,
        )
    return Transition(
        "slot-restarted",
        state,
        (SetRoutes(state.routes()),),
        reason=f"slot restarted at {endpoint}",
        changed=False,
        record=True,
        details={"release_id": release_id},
    )


def restart_abandoned(
    state: DeploymentState, release_id: int, limit: int, window: float
) -> Transition:
    """The crash-loop verdict, for the history."""
    reason = (
        f"slot of release {release_id} died {limit} times within {window:g}s: not restarted "
        "again (a crash loop); its logs tell why, and staging or reverting starts it afresh"
    )
    return observation(state, "restart-abandoned", reason, {"release_id": release_id})


def restart_failed(state: DeploymentState, release_id: int, message: str) -> Transition:
    """A restart that failed, for the history."""
    return observation(
        state, "restart-failed", f"restart failed: {message}", {"release_id": release_id}
    )


def retire_standby(state: DeploymentState) -> Transition:
    """Retire the standby slot early, giving up the instant revert to it.

    Refused while a step plan runs (a revert may need the standby soon after).
    """
    if state.standby is None:
        return unchanged(state, "retire", "no standby to retire")
    if state.plan is not None:
        raise IllegalTransition(
            f"a promotion of {state.name} is under way: wait for it before retiring the standby",
            hint="wait",
        )
    new = replace(state, standby=None)
    return Transition(
        "retire",
        new,
        (SetRoutes(new.routes()), RetireSlot(state.standby)),
        f"standby release {state.standby} retired; revert to it is no longer possible",
    )


def restart_allowed(
    recent: Sequence[float], now: float, limit: int, window: float
) -> tuple[bool, tuple[float, ...]]:
    """Whether a slot that restarted at the times ``recent`` may restart at ``now``.

    At most ``limit`` restarts within ``window`` seconds, so a crash loop stops. Returns the
    verdict and the restart times to keep (``now`` included when allowed).
    """
    kept = tuple(t for t in recent if now - t < window)
    if len(kept) >= limit:
        return False, kept
    return True, (*kept, now)
