"""A deployment's state, the actions that realise it, and the transition record.

Pure data: :mod:`bgserve.domain.rollout` and :mod:`bgserve.domain.slots` decide, the
application's executor performs. The phase is derived from the state, never stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bgserve.domain.plan import Plan


class Phase(StrEnum):
    """Where a deployment stands, derived from its state."""

    STABLE = "stable"  # blue takes all traffic, no green
    STAGED = "staged"  # green deployed at weight 0, never reverted
    SHIFTING = "shifting"  # green takes part of the traffic
    PROMOTING = "promoting"  # a step plan is under way
    HELD = "held"  # a step plan waits for an operator (analysis inconclusive)
    REVERTED = "reverted"  # green kept at weight 0 after a revert


@dataclass(frozen=True)
class ReleasePair:
    """A deployment's blue and green release ids: what a comparison or a shadow report is
    about. A verdict on one pair says nothing about another."""

    blue: int
    green: int


@dataclass(frozen=True)
class LoosenedThreshold:
    """A threshold a comparison was judged on that lets more through than the server's."""

    name: str
    used: float
    configured: float

    def describe(self) -> str:
        """``name used (configured: value)``, for messages."""
        return f"{self.name} {self.used:g} (configured: {self.configured:g})"


@dataclass(frozen=True)
class Gate:
    """Outcome of the last comparison, valid only for the blue/green pair it compared.

    ``loosened`` lists the per-call thresholds looser than the server's that the verdict
    rests on: a pass on them opens the gate only to a forced step.
    """

    blue: int
    green: int
    passed: bool
    reasons: tuple[str, ...] = ()
    loosened: tuple[LoosenedThreshold, ...] = ()

    @property
    def pair(self) -> ReleasePair:
        """The pair this comparison compared."""
        return ReleasePair(self.blue, self.green)


@dataclass(frozen=True)
class DeploymentState:
    """Everything the state machine needs to know about one deployment.

    ``version`` is the optimistic-concurrency counter: the store refuses a write whose
    version is not the one it read. ``plan`` is the promotion plan under way, if any
    (persisted, so the rollout engine resumes it after a restart).
    """

    name: str
    blue: int
    green: int | None = None
    green_weight: int = 0
    standby: int | None = None
    reverted: bool = False
    gate: Gate | None = None
    plan: Plan | None = None
    version: int = 0

    @property
    def blue_weight(self) -> int:
        return 100 - self.green_weight - self.baseline_weight

    @property
    def baseline(self) -> int | None:
        """The release id of the plan's baseline slot (a fresh copy of blue's release that
        green is analysed against), while a plan with one runs."""
        return None if self.plan is None else self.plan.baseline_release

    @property
    def baseline_weight(self) -> int:
        """The baseline's share: green's, while a plan with a baseline runs."""
        return self.green_weight if self.baseline is not None else 0

    @property
    def phase(self) -> Phase:
        if self.plan is not None:
            return Phase.HELD if self.plan.held else Phase.PROMOTING
        if self.green is None:
            return Phase.STABLE
        if self.green_weight > 0:
            return Phase.SHIFTING
        return Phase.REVERTED if self.reverted else Phase.STAGED

    @property
    def phase_reason(self) -> str:
        """Why the deployment is in its :attr:`phase`, in one sentence."""
        plan, green = self.plan, self.green
        if plan is not None:
            step = f"step {plan.step_index + 1} of {len(plan.steps)} at {plan.weight}%"
            if plan.held:
                return f"the plan waits for an operator at {step}: {plan.held}"
            return f"a promotion plan is under way: {step}"
        if green is None:
            return f"blue release {self.blue} takes all traffic; no green is staged"
        if self.green_weight > 0:
            return f"green release {green} takes {self.green_weight}% of the traffic"
        if self.reverted:
            return f"reverted: green release {green} is kept at 0% after a revert"
        return f"green release {green} is staged at 0%, waiting for a comparison or a promotion"

    @property
    def pair(self) -> ReleasePair | None:
        """The current blue/green pair; None without a green."""
        return None if self.green is None else ReleasePair(self.blue, self.green)

    def routes(self) -> tuple[Route, ...]:
        """The weighted routes that realise this state (blue first)."""
        routes = [Route("blue", self.blue, self.blue_weight)]
        if self.green is not None:
            routes.append(Route("green", self.green, self.green_weight))
        if self.baseline is not None:
            routes.append(Route("baseline", self.baseline, self.baseline_weight))
        if self.standby is not None:
            routes.append(Route("standby", self.standby, 0))
        return tuple(routes)

    def gate_for_current_pair(self) -> Gate | None:
        """The last comparison's gate if it compared the current pair; else None (there
        is none, or it is stale: blue or green changed since)."""
        gate = self.gate
        return gate if gate is not None and gate.pair == self.pair else None

    @property
    def gate_is_stale(self) -> bool:
        """True when a gate is stored but compared another pair than the current one."""
        return self.gate is not None and self.gate_for_current_pair() is None


@dataclass(frozen=True)
class Route:
    """One slot's share of a deployment's traffic."""

    role: str  # "blue" | "green" | "standby" | "baseline"
    release_id: int
    weight: int


@dataclass(frozen=True)
class EnsureSlot:
    """Make a slot serve ``release_id`` and wait until it is ready."""

    release_id: int


@dataclass(frozen=True)
class SetRoutes:
    """Apply these weights atomically."""

    routes: tuple[Route, ...]


@dataclass(frozen=True)
class RetireSlot:
    """Stop serving ``release_id`` for this deployment."""

    release_id: int


@dataclass(frozen=True)
class MoveAliases:
    """Point the ``<deployment>-live`` aliases at ``live`` and ``-previous`` at ``previous``."""

    live: int
    previous: int | None


Action = EnsureSlot | SetRoutes | RetireSlot | MoveAliases


@dataclass(frozen=True)
class Transition:
    """What a transition decided: the state to persist, the actions to perform, the record.

    ``changed`` means ``state`` is persisted (with a new version) together with a history
    event named ``action`` with ``reason`` and ``details``. An unchanged transition may still
    carry actions (re-applying the stored routes after a slot restart) and ``record`` an
    event (an observation, such as a slot that died without changing any weight).
    ``report`` is a comparison report to store beside the state.
    """

    action: str
    state: DeploymentState
    actions: tuple[Action, ...] = ()
    reason: str = ""
    changed: bool = True
    details: Mapping[str, Any] = field(default_factory=dict)
    record: bool = False
    report: Mapping[str, Any] | None = None


def unchanged(state: DeploymentState, action: str, reason: str) -> Transition:
    """A decision to do nothing, with the reason (not recorded in the history)."""
    return Transition(action, state, reason=reason, changed=False)


def observation(
    state: DeploymentState, action: str, reason: str, details: Mapping[str, Any] | None = None
) -> Transition:
    """Nothing changes, but the history records ``action`` (principal and reason)."""
    return Transition(
        action, state, reason=reason, changed=False, record=True, details=details or {}
    )
