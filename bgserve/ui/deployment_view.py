"""The deployment page: slots and weights, traffic per slot, the plan with each check's
numbers, weights over time, the release timeline, and both comparisons."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from bgserve.app.follow_rules import RuleView
from bgserve.domain.plan import Plan
from bgserve.domain.release import Release
from bgserve.domain.shadow import ShadowReport
from bgserve.ui.chart import live_at, timeline_table, weights_chart
from bgserve.ui.compare_view import golden_section, shadow_section
from bgserve.ui.follow_view import follow_section
from bgserve.ui.html import badge, e, key_values, num, release_label, table, weight_bar
from bgserve.ui.list_view import gate_cell, plan_cell
from bgserve.ui.snapshot import DeploymentView
from bgserve.ui.timeline import Segment, at

MAX_ANALYSES = 5
_CHECK_TEXT = ("name", "outcome", "reason")


@dataclass(frozen=True)
class PageData:
    """Everything the live part of a deployment page shows."""

    view: DeploymentView
    releases: Mapping[int, Release]
    timeline: Sequence[Segment]
    traffic: Sequence[Mapping[str, Any]] | None
    shadow: ShadowReport | None
    shadow_percent: int
    now: datetime
    moment: datetime | None
    follow: RuleView | None = None


def _slots(data: PageData) -> str:
    rows = [
        [
            f"<span class='role {e(s.role)}'>{e(s.role)}</span>",
            release_label(s.release, s.release_id),
            f"{s.weight}%",
            badge("ready", "pass") if s.ready else badge("not ready", "fail"),
        ]
        for s in data.view.slots
    ]
    return table(["slot", "release", "weight", "readiness"], rows)


def _traffic(data: PageData) -> str:
    if data.traffic is None:
        return "<p class='muted'>This backend's data plane has no counters to show.</p>"
    rows = []
    for row in data.traffic:
        requests, errors = int(row.get("requests", 0)), int(row.get("errors", 0))
        rate = f"{errors / requests:.2%}" if requests else "—"
        rows.append(
            [
                f"<span class='role {e(row.get('role'))}'>{e(row.get('role'))}</span>",
                f"#{e(row.get('release_id'))}",
                str(requests),
                str(errors),
                rate,
            ]
        )
    if not rows:
        return "<p class='muted'>No requests yet.</p>"
    return table(["slot", "release", "requests", "errors", "error rate"], rows)


def _check_numbers(check: Mapping[str, Any]) -> str:
    parts = [f"{e(k)} {num(v)}" for k, v in check.items() if k not in _CHECK_TEXT]
    return ", ".join(parts)


def _analysis(record: Mapping[str, Any]) -> str:
    moment = record.get("at")
    stamp = (
        datetime.fromtimestamp(moment, UTC).strftime("%H:%M:%S")
        if isinstance(moment, int | float)
        else ""
    )
    rows = [
        [
            e(c.get("name")),
            badge(str(c.get("outcome")), _kind(str(c.get("outcome")))),
            _check_numbers(c),
            e(c.get("reason") or ""),
        ]
        for c in record.get("checks", [])
    ]
    title = f"Analysis at {record.get('step')}% {stamp}: {record.get('outcome')}"
    return f"<h4>{e(title)}</h4>" + table(["check", "outcome", "numbers", "reason"], rows)


def _kind(outcome: str) -> str:
    return {"pass": "pass", "fail": "fail", "inconclusive": "warn"}.get(outcome, "idle")


def _plan(plan: Plan | None, data: PageData) -> str:
    if plan is None:
        return "<p class='muted'>No plan under way.</p>"
    steps = " → ".join(
        f"<strong>{s}%</strong>" if i == plan.step_index else f"{s}%"
        for i, s in enumerate(plan.steps)
    )
    facts = {
        "steps": steps,
        "where": plan_cell(data.view.stored.state, data.now),
        "bake per step": f"{plan.bake_s:g} s",
        "held": e(plan.held) if plan.held else "no",
        "forced": "yes" if plan.force else "no",
    }
    analyses = "".join(_analysis(r) for r in reversed(plan.analyses[-MAX_ANALYSES:]))
    return key_values(facts) + (analyses or "<p class='muted'>No analysis yet.</p>")


def _summary(data: PageData) -> str:
    state = data.view.stored.state
    green = state.green_weight if state.green is not None else 0
    return (
        f"<p class='summary'>{badge(state.phase.value, 'idle')} "
        f"{weight_bar(state.blue_weight, green)} gate: {gate_cell(state)}</p>"
        f"<p class='muted'>{e(state.phase_reason)}</p>"
    )


def live_fragment(data: PageData) -> str:
    """The part of the deployment page the script refreshes."""
    view = data.view
    selected = at(data.timeline, data.moment) if data.moment else None
    answer = live_at(data.moment, selected, data.releases) if data.moment else ""
    stale = view.stored.state.gate_is_stale
    return (
        _summary(data)
        + "<div class='cols'><section aria-labelledby='h-slots'><h2 id='h-slots'>Slots</h2>"
        + _slots(data)
        + "</section><section aria-labelledby='h-traffic'><h2 id='h-traffic'>Requests and "
        "errors per slot</h2>"
        + _traffic(data)
        + "</section></div><section aria-labelledby='h-plan'><h2 id='h-plan'>Plan</h2>"
        + _plan(view.stored.state.plan, data)
        + "</section><section aria-labelledby='h-chart'><h2 id='h-chart'>Weights over time"
        "</h2>"
        + weights_chart(data.timeline, data.releases, data.now, data.moment)
        + "</section><section aria-labelledby='h-timeline'><h2 id='h-timeline'>Release "
        "timeline</h2>"
        + answer
        + timeline_table(view.name, data.timeline, data.releases, selected)
        + "</section><section aria-labelledby='h-golden'><h2 id='h-golden'>Golden comparison"
        "</h2>"
        + golden_section(view.stored.last_comparison, stale)
        + "</section><section aria-labelledby='h-shadow'><h2 id='h-shadow'>Shadow comparison"
        "</h2>" + shadow_section(data.shadow, data.shadow_percent) + "</section>"
        "<section aria-labelledby='h-follow'><h2 id='h-follow'>Follow rule</h2>"
        + follow_section(data.follow)
        + "</section>"
    )


def live_src(name: str, moment: datetime | None) -> str:
    """The URL the script polls for this page's live part."""
    query = f"?at={quote(moment.isoformat())}" if moment else ""
    return f"/ui/d/{quote(name)}/live{query}"
