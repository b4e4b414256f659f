"""How a promotion plan reads on a terminal: where it stands, and a live watch of it.

``bgserve promote NAME`` submits a plan and watches it until it ends; the exit code says
how: 0 cut over, 3 reverted (by live analysis or an operator), 4 held for an operator.
Ctrl-C stops watching, never the plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

CUT_OVER, REVERTED, HELD = 0, 3, 4


def plan_lines(deployment: dict[str, Any], now: datetime | None = None) -> list[str]:
    """Where the deployment's plan stands, a line each (empty when no plan runs)."""
    plan = deployment.get("plan")
    if not plan:
        return []
    steps = " → ".join(f"{s}%" for s in plan["steps"])
    lines = [
        f"plan {steps}: step {plan['step_index'] + 1} of {len(plan['steps'])}, "
        f"green at {plan['weight']}%"
    ]
    if plan.get("held"):
        lines.append(f"held, waiting for an operator: {plan['held']}")
    elif plan.get("warming_up"):
        lines.append(f"warming green up before its first step to {plan['weight']}%")
    elif plan.get("bake_until"):
        until = datetime.fromisoformat(plan["bake_until"].replace("Z", "+00:00"))
        left = (until - (now or datetime.now(UTC))).total_seconds()
        lines.append(f"baking, {max(left, 0):.0f}s left" if left > 0 else "analysing")
    if plan.get("analysis"):
        lines.append("last analysis: " + _analysis_line(plan["analysis"][-1]))
    return lines


def _analysis_line(analysis: dict[str, Any]) -> str:
    parts = [f"{analysis.get('outcome')} at {analysis.get('step')}%"]
    for check in analysis.get("checks", []):
        if check["name"] == "error_rate" and "green_errors" in check:
            parts.append(
                f"errors blue {check['blue_errors']}/{check['blue_requests']}, "
                f"green {check['green_errors']}/{check['green_requests']}"
            )
        elif check["name"] in ("latency_p50", "latency_p95") and "ratio" in check:
            blue, green = latency_sides(check)
            parts.append(f"{check['name'][-3:]} {green} vs {blue} ms")
        elif check.get("outcome") == "inconclusive":
            parts.append(check.get("reason", ""))
    return "; ".join(parts)


def latency_sides(check: dict[str, Any]) -> tuple[object, object]:
    """Blue's and green's figure (ms) of a latency check; plans stored by older releases
    named latency_p95's ``blue_p95_ms``/``green_p95_ms``."""
    return (
        check.get("blue_ms", check.get("blue_p95_ms")),
        check.get("green_ms", check.get("green_p95_ms")),
    )


def outcome_of(deployment: dict[str, Any], last_action: str | None) -> int | None:
    """The exit code once the plan has ended or waits for an operator; None while it runs."""
    plan = deployment.get("plan")
    if plan:
        return HELD if plan.get("held") else None
    if deployment.get("green") is None and last_action == "promote":
        return CUT_OVER
    return REVERTED


def watch(
    fetch: Callable[[], dict[str, Any]],
    last_action: Callable[[], str | None],
    console: Console,
    interval: float = 0.5,
) -> int:
    """Show the plan live until it ends; the exit code of :func:`outcome_of`."""
    deployment = fetch()
    try:
        with Live(_view(deployment), console=console, refresh_per_second=4) as live:
            while (code := _ended(deployment, last_action)) is None:
                time.sleep(interval)
                deployment = fetch()
                live.update(_view(deployment))
    except KeyboardInterrupt:
        console.print("stopped watching; the plan goes on (see `bgserve status`)")
        return 130
    console.print(_verdict(code, last_action()))
    return code


def _ended(deployment: dict[str, Any], last_action: Callable[[], str | None]) -> int | None:
    if deployment.get("plan") and not deployment["plan"].get("held"):
        return None
    return outcome_of(deployment, last_action())


def _view(deployment: dict[str, Any]) -> Group:
    table = Table("slot", "release", "weight")
    for role in ("blue", "green", "standby"):
        slot = deployment.get(role)
        if slot:
            table.add_row(role, str(slot["release"]["id"]), f"{slot['weight']}%")
    title = Text(f"{deployment['name']}  phase {deployment['phase']}")
    return Group(title, table, *(Text(line) for line in plan_lines(deployment)))


def _verdict(code: int, last_action: str | None) -> str:
    if code == CUT_OVER:
        return "cut over: green is blue now"
    if code == HELD:
        return "held: promote again to go on, or revert"
    if last_action == "auto-revert":
        return "reverted automatically by live analysis (see `bgserve history`)"
    return "reverted"
