"""A promotion plan as data, and what it needs next: nothing, a step, a hold, a revert or
the cutover, decided from (state, live counts, now). Pure: no clock, no sleeping.

A plan first **warms green up** (``warmup``: requests sent to green directly, which no
analysis counts), then walks it through ``steps`` (increasing weights ending at 100).
Each step's weight is applied; its first ``initial_delay_s`` seconds do not count; then it
bakes for ``bake_s`` seconds, and at the end of the bake green is analysed against blue
over the step's window (:mod:`bgserve.domain.analysis`), the same seconds for both:

========================  ====================================================
analysis                  what happens
========================  ====================================================
pass                      the next step (the last one, 100, is the cutover)
fail                      automatic revert at once (``auto-revert``)
inconclusive              keep baking until ``max_bake_s``, then
                          ``on_inconclusive``: ``hold`` (wait for an operator),
                          ``revert``, or ``continue``
========================  ====================================================

A green slot that dies during a plan is handled at once by the slot-loss rule
(:func:`bgserve.domain.slots.on_slot_lost`), not at the end of the bake.

With a **baseline** (``compare_with`` ``"baseline"``, Kayenta's design) green is not
analysed against blue, which has served for hours, but against a fresh slot of blue's
release started with the plan and given the same share of the traffic as green: two new
processes of the same age, one of each release. Blue keeps the rest, so every step before
the cutover is at most 50%.

The bake counts only time that was watched: the window starts when the rollout engine
first reads the step's counts after the initial delay, so after a restart or a leader
change (whose counts died with the process that had them) the step bakes its full
``bake_s`` again from the new reading, rather than ending at once on a window of a few
seconds.

Durations are capped at 30 days (:mod:`bgserve.domain.plan_rules`, which holds every rule
of a valid plan): longer ones cannot be represented everywhere a plan is shown, and no
step needs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bgserve.domain.analysis import (
    Analysis,
    AnalysisSettings,
    Check,
    Outcome,
    analysis_json,
    combined,
)
from bgserve.domain.plan_rules import (
    Warmup,
    check_analysis,
    check_duration,
    check_reference,
    check_warmup,
    parse_steps,
)
from bgserve.domain.streaming import run
from bgserve.domain.window import SideWindow

KEPT_ANALYSES = 20


@dataclass(frozen=True)
class Plan:
    """A promotion plan under way, stored on the deployment.

    ``step_index`` is the step whose weight is applied (or about to be, while
    ``step_started_at`` is None); ``held`` says why the plan waits for an operator.
    ``analyses`` holds the JSON of the analyses so far, the latest last. Green's warm-up
    (``warmup``) is due while the first step has not been applied.
    ``compare_with`` is ``"blue"`` or ``"baseline"``; ``baseline_release`` is then the id
    of the copy of blue's release registered for this plan (its slot is the baseline).
    """

    steps: tuple[int, ...]
    bake_s: float
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    step_index: int = 0
    step_started_at: float | None = None
    held: str = ""
    analyses: tuple[Mapping[str, Any], ...] = ()
    force: bool = False
    warmup: Warmup = field(default_factory=Warmup)
    compare_with: str = "blue"
    baseline_release: int | None = None

    @property
    def weight(self) -> int:
        """The weight of the current step."""
        return self.steps[self.step_index]

    @property
    def needs_warmup(self) -> bool:
        """True while green's warm-up is due (before the first step is applied)."""
        first_step_due = self.step_index == 0 and self.step_started_at is None
        return self.warmup.requests > 0 and first_step_due and not self.held

    @property
    def window_from(self) -> float | None:
        """When the current step's window may start: its start plus the initial delay."""
        if self.step_started_at is None:
            return None
        return self.step_started_at + self.analysis.initial_delay_s

    @property
    def bake_until(self) -> float | None:
        """When the current step's bake ends (epoch seconds) if its window starts on time."""
        start = self.window_from
        return None if start is None else start + self.bake_s

    @property
    def last_analysis(self) -> Mapping[str, Any] | None:
        return self.analyses[-1] if self.analyses else None

    def with_analysis(self, record: Mapping[str, Any]) -> Plan:
        """The plan with ``record`` appended to its analyses (the oldest dropped past a cap)."""
        return replace(self, analyses=(*self.analyses, record)[-KEPT_ANALYSES:])


def make_plan(
    steps: Sequence[int],
    bake_s: float,
    analysis: AnalysisSettings,
    *,
    force: bool = False,
    warmup: Warmup | None = None,
    compare_with: str = "blue",
) -> Plan:
    """A validated plan. Raises InvalidInput naming the field at fault."""
    checked = parse_steps(steps)
    check_duration("plan.bake_s", bake_s)
    check_analysis(analysis, bake_s)
    warmup = warmup or Warmup()
    check_warmup(warmup)
    check_reference(compare_with, checked)
    return Plan(
        checked, float(bake_s), analysis, force=force, warmup=warmup, compare_with=compare_with
    )


def remaining_from(plan: Plan, green_weight: int) -> Plan:
    """Skip the steps at or below green's current weight (a plan started mid-shift; green
    then already answers live traffic, so it needs no warm-up)."""
    steps = tuple(s for s in plan.steps if s > green_weight or s == green_weight == 0)
    steps = steps or (100,)
    warmup = plan.warmup if green_weight == 0 else replace(plan.warmup, requests=0)
    return replace(plan, steps=steps, step_index=0, step_started_at=None, warmup=warmup)


@dataclass(frozen=True)
class Due:
    """What a plan needs now: ``kind`` is one of nothing, step, analysis, hold, revert."""

    kind: str
    reason: str = ""
    plan: Plan | None = None
    analysis: Analysis | None = None


def due(
    plan: Plan,
    blue: SideWindow | None,
    green: SideWindow | None,
    now: float,
    extra: tuple[Check, ...] = (),
    window_since: float | None = None,
) -> Due:
    """What ``plan`` needs at ``now``, given the traffic of the current step's window and
    ``extra`` checks (the shadow comparison of mirrored traffic, when one runs).

    ``window_since`` is when the window's counts were first read (None: on time, at
    :attr:`Plan.window_from`); a later reading (a restart, a new leader) starts the bake
    again from it. At a 0% step green takes no live traffic: only the extra checks can
    judge it.
    """
    if plan.held:
        return Due("nothing", f"held: {plan.held}")
    if plan.needs_warmup:
        return Due("warmup", f"green's warm-up ({plan.warmup.requests} requests) comes first")
    window_from = plan.window_from
    if window_from is None:
        return Due("step", f"step {plan.step_index + 1} of {len(plan.steps)}", plan)
    if now < window_from:
        return Due("nothing", "initial delay: the first seconds of a step do not count")
    counting_from = max(window_from, window_since or window_from)
    if now < counting_from + plan.bake_s:
        return Due("nothing", "baking")
    return _after_bake(plan, _analysis(plan, blue, green, extra), now, counting_from)


def _analysis(
    plan: Plan, blue: SideWindow | None, green: SideWindow | None, extra: tuple[Check, ...]
) -> Analysis:
    if plan.weight == 0:
        if not extra:
            reason = "a 0% step sees no live traffic on green: shadow traffic must judge it"
            return combined((Check("shadow", Outcome.INCONCLUSIVE, reason),))
        return combined(extra)
    if blue is None or green is None:
        return combined(extra) if extra else Analysis(Outcome.INCONCLUSIVE, ())
    return combined(run(blue, green, plan.analysis, plan.compare_with) + extra)


def _after_bake(plan: Plan, analysis: Analysis, now: float, counting_from: float) -> Due:
    record = {"step": plan.weight, "at": now, **analysis_json(analysis)}
    recorded = plan.with_analysis(record)
    if analysis.outcome is Outcome.FAIL:
        return Due("revert", "live analysis failed: " + analysis.summary(), recorded, analysis)
    if analysis.outcome is Outcome.PASS:
        return Due("step", f"step at {plan.weight}% passed", _advance(recorded), analysis)
    waited = now - counting_from
    reason = analysis.summary() if analysis.checks else "no traffic counts for green or blue"
    if waited < plan.analysis.max_bake_s:
        first = plan.last_analysis is None or plan.last_analysis.get("step") != plan.weight
        kind = "analysis" if first else "nothing"
        return Due(
            kind, f"step at {plan.weight}% inconclusive, baking on: {reason}", recorded, analysis
        )
    choice = plan.analysis.on_inconclusive
    reason = f"step at {plan.weight}% inconclusive after {waited:.0f}s: {reason}"
    if choice == "revert":
        return Due("revert", reason, recorded, analysis)
    if choice == "continue":
        return Due("step", reason, _advance(recorded), analysis)
    return Due("hold", reason, replace(recorded, held=reason), analysis)


def _advance(plan: Plan) -> Plan:
    return replace(plan, step_index=plan.step_index + 1, step_started_at=None)


def resume(plan: Plan) -> Plan:
    """An operator's go-ahead on a held plan: on to the next step."""
    return _advance(replace(plan, held=""))


def plan_json(plan: Plan | None) -> dict[str, Any] | None:
    """The stored (JSON) form of a plan."""
    if plan is None:
        return None
    body = asdict(plan)
    body["steps"] = list(plan.steps)
    body["analysis"]["checks"] = list(plan.analysis.checks)
    body["analyses"] = [dict(a) for a in plan.analyses]
    return body


def plan_of(body: object) -> Plan | None:
    """A plan from its stored form; a list is the remaining steps of an older release."""
    if not body:
        return None
    if isinstance(body, list):
        legacy = AnalysisSettings(on_inconclusive="continue", min_requests=1)
        return Plan(tuple(int(s) for s in body), 0.0, legacy)
    if not isinstance(body, dict):
        raise ValueError(f"unreadable stored plan: {body!r}")
    return Plan(
        steps=tuple(int(s) for s in body["steps"]),
        bake_s=float(body["bake_s"]),
        analysis=AnalysisSettings(**body.get("analysis", {})),
        step_index=int(body.get("step_index", 0)),
        step_started_at=body.get("step_started_at"),
        held=str(body.get("held", "")),
        analyses=tuple(body.get("analyses", ())),
        force=bool(body.get("force", False)),
        warmup=Warmup(**body.get("warmup", {})),
        compare_with=str(body.get("compare_with", "blue")),
        baseline_release=body.get("baseline_release"),
    )
