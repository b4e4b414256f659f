"""The deployment list: one row per deployment, refreshed in place every two seconds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from urllib.parse import quote

from bgserve.api.plan_schemas import moment
from bgserve.domain.rollout import DeploymentState
from bgserve.ui.html import badge, e, release_label, table, weight_bar
from bgserve.ui.snapshot import DeploymentView, SlotView, bake_left


def slot_cell(slot: SlotView | None) -> str:
    """A slot's release, and whether it is ready."""
    if slot is None:
        return "<span class='muted'>none</span>"
    ready = badge("ready", "pass") if slot.ready else badge("not ready", "fail")
    return f"{release_label(slot.release, slot.release_id)} {ready}"


def _slot(view: DeploymentView, role: str) -> SlotView | None:
    return next((s for s in view.slots if s.role == role), None)


def plan_cell(state: DeploymentState, now: datetime) -> str:
    """The plan's step and bake time left, or a dash."""
    plan = state.plan
    if plan is None:
        return "<span class='muted'>—</span>"
    text = f"step {plan.step_index + 1} of {len(plan.steps)} ({plan.weight}%)"
    if plan.held:
        return f"{e(text)}<br>{badge('held', 'warn')}"
    if plan.needs_warmup:
        return f"{e(text)}<br><small>warming green up</small>"
    left = bake_left(moment(plan.bake_until), now)
    if left is None:
        return e(text)
    if left > 0:
        return f"{e(text)}<br><small>{left:.0f} s bake left</small>"
    last = plan.last_analysis
    outcome = f"last analysis {last.get('outcome')}" if last else "analysing"
    return f"{e(text)}<br><small>baked; {e(outcome)}</small>"


def gate_cell(state: DeploymentState) -> str:
    """The last gate verdict: passed, failed, stale (older pair) or none yet."""
    gate = state.gate
    if gate is None:
        return "<span class='muted'>no comparison</span>"
    if state.gate_is_stale:
        return badge("stale", "idle")
    if gate.passed and gate.loosened:
        return badge("passed on loosened thresholds", "idle")
    return badge("passed", "pass") if gate.passed else badge("failed", "fail")


def _row(view: DeploymentView, now: datetime) -> list[str]:
    state = view.stored.state
    link = f"<a href='/ui/d/{e(quote(state.name))}'>{e(state.name)}</a>"
    return [
        link,
        badge(state.phase.value, "idle"),
        slot_cell(_slot(view, "blue")),
        slot_cell(_slot(view, "green")),
        slot_cell(_slot(view, "standby")),
        weight_bar(state.blue_weight, state.green_weight if state.green is not None else 0),
        plan_cell(state, now),
        gate_cell(state),
    ]


def list_fragment(views: Sequence[DeploymentView], now: datetime) -> str:
    """The table of every deployment (the part the script replaces)."""
    if not views:
        return (
            "<p>No deployments yet. Register a release and deploy it: "
            "<code>bgserve deploy NAME --release ID</code>.</p>"
        )
    headers = ["deployment", "phase", "blue", "green", "standby", "weights", "plan", "gate"]
    return table(headers, (_row(v, now) for v in views), caption="Deployments")


def list_body(fragment: str) -> str:
    """The list page's body around its live fragment."""
    return (
        "<h1>Deployments</h1>"
        f"<section id='live' data-src='/ui/live' aria-live='off'>{fragment}</section>"
    )
