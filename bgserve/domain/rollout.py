"""The deployment state machine. Pure: no I/O, no clock, no backend.

A deployment holds one live release (blue) and at most one candidate (green), plus
a standby (the previous blue, kept running after a cutover for an instant revert).
Green and standby are never both set: staging a new green retires the standby.

Each transition takes a state and returns a :class:`Transition`: the new state, the
actions an executor must perform (in order) and a one-line reason for the history.
The phase is derived from the state, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from bgserve.errors import GateClosed, IllegalTransition, InvalidInput


class Phase(StrEnum):
    """Where a deployment stands, derived from its state."""

    STABLE = "stable"  # blue takes all traffic, no green
    STAGED = "staged"  # green deployed at weight 0, never reverted
    SHIFTING = "shifting"  # green takes part of the traffic
    PROMOTING = "promoting"  # a step plan is under way
    REVERTED = "reverted"  # green kept at weight 0 after a revert


@dataclass(frozen=True)
class Gate:
    """Outcome of the last comparison, valid only for the blue/green pair it compared."""

    blue: int
    green: int
    passed: bool
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploymentState:
    """Everything the state machine needs to know about one deployment.

    ``version`` is the optimistic-concurrency counter: the store refuses a write whose
    version is not the one it read. ``plan`` holds the remaining weights of a step plan
    under way (persisted, so an interrupted promotion can be resumed or reverted).
    """

    name: str
    blue: int
    green: int | None = None
    green_weight: int = 0
    standby: int | None = None
    reverted: bool = False
    gate: Gate | None = None
    plan: tuple[int, ...] = ()
    version: int = 0

    @property
    def blue_weight(self) -> int:
        return 100 - self.green_weight

    @property
    def phase(self) -> Phase:
        if self.plan:
            return Phase.PROMOTING
        if self.green is None:
            return Phase.STABLE
        if self.green_weight > 0:
            return Phase.SHIFTING
        return Phase.REVERTED if self.reverted else Phase.STAGED

    def routes(self) -> tuple[Route, ...]:
        """The weighted routes that realise this state (blue first)."""
        routes = [Route("blue", self.blue, self.blue_weight)]
        if self.green is not None:
            routes.append(Route("green", self.green, self.green_weight))
        if self.standby is not None:
            routes.append(Route("standby", self.standby, 0))
        return tuple(routes)

    def gate_for_current_pair(self) -> Gate | None:
        gate = self.gate
        if gate and gate.blue == self.blue and gate.green == self.green:
            return gate
        return None


@dataclass(frozen=True)
class Route:
    """One slot's share of a deployment's traffic."""

    role: str  # "blue" | "green" | "standby"
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
    """The result of a transition: the state to persist and the actions to perform first."""

    action: str
    state: DeploymentState
    actions: tuple[Action, ...] = ()
    reason: str = ""
    changed: bool = True
    details: dict[str, object] = field(default_factory=dict)


def create(name: str, release_id: int) -> Transition:
    """A new deployment: ``release_id`` as blue at weight 100."""
    state = DeploymentState(name=name, blue=release_id)
    actions = (EnsureSlot(release_id), SetRoutes(state.routes()), MoveAliases(release_id, None))
    return Transition("create", state, actions, f"release {release_id} deployed as blue")


def stage_green(state: DeploymentState, release_id: int) -> Transition:
    """Deploy ``release_id`` as green at weight 0, replacing an earlier idle green.

    Refused while green takes traffic or a step plan is under way.
    """
    if state.plan:
        raise IllegalTransition(
            f"a promotion of {state.name} is under way (remaining steps {list(state.plan)}): "
            "wait for it to finish, or revert before staging another release"
        )
    if state.green_weight > 0:
        raise IllegalTransition(
            f"green release {state.green} takes {state.green_weight}% of {state.name}'s traffic: "
            "promote it to 100 or revert before staging another release"
        )
    if release_id == state.blue:
        raise IllegalTransition(
            f"release {release_id} is already blue on {state.name}: stage a different release"
        )
    if release_id == state.green:
        return Transition(
            "stage", state, reason=f"release {release_id} is already green", changed=False
        )
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
    if state.plan:
        raise IllegalTransition(
            f"a promotion of {state.name} is under way (remaining steps {list(state.plan)}): "
            "wait for it to finish, or revert"
        )
    return _shift(state, weight, force=force)


def _shift(state: DeploymentState, weight: int, *, force: bool) -> Transition:
    if not 0 <= weight <= 100:
        raise InvalidInput(f"weight {weight} is out of range: use 0 to 100", field="weight")
    if state.green is None:
        raise IllegalTransition(
            f"{state.name} has no green release: stage one with "
            f"POST /deployments/{state.name}/green before promoting"
        )
    if weight == state.green_weight:
        return Transition("shift", state, reason=f"green already at {weight}%", changed=False)
    if weight > state.green_weight and not force:
        check_gate(state)
    if weight == 100:
        return promote(state)
    new = replace(state, green_weight=weight, reverted=False)
    return Transition(
        "shift",
        new,
        (SetRoutes(new.routes()),),
        f"green {state.green} from {state.green_weight}% to {weight}%",
    )


def check_gate(state: DeploymentState) -> None:
    """Raise :class:`GateClosed` unless the current pair has a passing comparison."""
    gate = state.gate_for_current_pair()
    if gate is None:
        raise GateClosed(
            f"green release {state.green} of {state.name} has no comparison against blue "
            f"release {state.blue}: run POST /deployments/{state.name}/compare first, "
            'or pass "force": true',
            details={"reasons": ["no comparison for the current blue/green pair"]},
        )
    if not gate.passed:
        raise GateClosed(
            f"the last comparison of {state.name} failed: "
            + "; ".join(gate.reasons)
            + ' (fix green, or pass "force": true)',
            details={"reasons": list(gate.reasons)},
        )


def promote(state: DeploymentState) -> Transition:
    """Cut over: green becomes blue at 100, the old blue becomes the standby."""
    assert state.green is not None
    new = replace(
        state,
        blue=state.green,
        green=None,
        green_weight=0,
        standby=state.blue,
        reverted=False,
        plan=(),
    )
    actions = (SetRoutes(new.routes()), MoveAliases(new.blue, state.blue))
    return Transition(
        "promote",
        new,
        actions,
        f"release {state.green} promoted to blue at 100%; release {state.blue} kept as standby",
    )


def revert(state: DeploymentState) -> Transition:
    """All traffic back to the last good release, from any phase. Idempotent.

    During a shift, green drops to 0 (and stays deployed). After a cutover, the
    standby becomes blue again and the release it replaced is kept as green at 0.
    """
    if state.green is not None and (state.green_weight > 0 or state.plan):
        new = replace(state, green_weight=0, reverted=True, plan=())
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
            plan=(),
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
        replace(state, plan=()),
        reason=f"blue {state.blue} already takes all traffic",
        changed=bool(state.plan),
    )


def start_plan(state: DeploymentState, steps: list[int], *, force: bool = False) -> Transition:
    """Record a step plan: the weights of ``steps`` above green's current weight."""
    if state.plan:
        raise IllegalTransition(
            f"a promotion of {state.name} is already under way "
            f"(remaining steps {list(state.plan)}): wait for it, or revert"
        )
    if state.green is None:
        _shift(state, 100, force=True)  # raises the no-green error
    if not force:
        check_gate(state)
    remaining = tuple(s for s in steps if s > state.green_weight) or (100,)
    new = replace(state, plan=remaining)
    return Transition("plan", new, reason=f"promotion plan {list(remaining)} started")


def next_plan_step(state: DeploymentState) -> Transition:
    """Take the next step of the plan under way (the gate was checked when it started)."""
    if not state.plan:
        raise IllegalTransition(f"no promotion of {state.name} is under way")
    step, rest = state.plan[0], state.plan[1:]
    moved = _shift(replace(state, plan=rest), step, force=True)
    return replace(moved, action="promote" if step == 100 else "shift")


def record_gate(state: DeploymentState, gate: Gate) -> DeploymentState:
    """Attach a comparison outcome to the state (it concerns only the pair it names)."""
    return replace(state, gate=gate)
