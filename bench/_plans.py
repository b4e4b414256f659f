"""Running one promotion plan to its end and reading how it ended, for the analysis
benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bgserve.app.service import Service
from bgserve.domain.plan import Plan
from bgserve.store import Event


@dataclass(frozen=True)
class PlanRun:
    """A finished plan: its history events, its first step, its last event and the checks
    of its last analysis."""

    history: list[Event]
    first_step: Event | None
    last: Event
    checks: list[dict[str, Any]]

    @property
    def outcome(self) -> str:
        """``promoted``, ``reverted`` (automatically), or the last event's action."""
        action = self.last.action
        return {"promote": "promoted", "auto-revert": "reverted"}.get(action, action)

    @property
    def to_revert_s(self) -> float | None:
        """Seconds from the first step to the automatic revert, if it was reverted."""
        if self.first_step is None or self.outcome != "reverted":
            return None
        return (self.last.at - self.first_step.at).total_seconds()


def run_plan_to_end(
    service: Service, deployment: str, who: str, plan: Plan | None = None
) -> tuple[PlanRun, float]:
    """Start ``plan`` (forced past the gate), wait for it to end; how it went, and when it
    started (epoch seconds)."""
    started = time.time()
    service.start_plan(deployment, who, plan, force=True)
    while service.get_deployment(deployment).state.plan is not None:
        time.sleep(0.05)
    history = [e for e in service.history(deployment) if e.at.timestamp() >= started - 1]
    first_step = next((e for e in history if e.action == "shift"), None)
    analysed = [e for e in history if (e.details or {}).get("analysis")]
    last_analysis = (analysed[-1].details or {})["analysis"] if analysed else {}
    return PlanRun(history, first_step, history[-1], last_analysis.get("checks", [])), started
