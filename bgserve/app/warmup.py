"""Green's warm-up before a plan's first step: requests no analysis counts.

A fresh slot's first answers pay for connections, caches, lazy imports and a cold
interpreter; judged against a blue that has served for hours they look like a slower
release, and on a busy machine that was enough to revert a healthy green at its first
step. So before the first step applies any weight, green is sent ``plan.warmup.requests``
calls directly (not through the data plane, so no traffic count sees them), made of the
inputs of the deployment's last golden comparison: the inputs its operators chose as
representative. A deployment never compared (a forced plan) has none, and the warm-up is
skipped with that reason in the history.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from bgserve.app.ports import DeploymentReader
from bgserve.app.slot_calls import SlotTarget, warm_slot
from bgserve.domain.state import DeploymentState
from bgserve.errors import BgserveError
from bgserve.evaluation.golden import GoldenCase

log = logging.getLogger("bgserve.warmup")


class SlotTargets(Protocol):
    """How to call one release's slot with some cases (the comparer knows)."""

    def target(
        self, name: str, release_id: int, cases: Sequence[GoldenCase]
    ) -> tuple[SlotTarget, object]: ...


class GreenWarmer:
    """Warms a deployment's green with the inputs of its last golden comparison."""

    def __init__(
        self, deployments: DeploymentReader, targets: SlotTargets, concurrency: int
    ) -> None:
        self.deployments = deployments
        self.targets = targets
        self.concurrency = concurrency

    def warm(self, state: DeploymentState) -> dict[str, Any]:
        """Warm green as ``state``'s plan asks; what happened, for the history. Never
        raises: a warm-up that cannot run says why and the plan goes on without it."""
        plan, green = state.plan, state.green
        if plan is None or green is None:
            return {"requests": 0, "skipped": "no plan or no green"}
        wanted = plan.warmup.requests
        cases = self._cases(state.name)
        if not cases:
            reason = "no golden inputs to warm green with: the deployment was never compared"
            return {"requests": wanted, "sent": 0, "skipped": reason}
        summary = self._warm_one(state, green, cases)
        if state.baseline is not None:
            # The baseline is as new as green: warmed alike, or it would be the slow side.
            summary["baseline"] = self._warm_one(state, state.baseline, cases)
        return summary

    def _warm_one(
        self, state: DeploymentState, release_id: int, cases: Sequence[GoldenCase]
    ) -> dict[str, Any]:
        assert state.plan is not None
        wanted = state.plan.warmup.requests
        try:
            target, _schema = self.targets.target(state.name, release_id, cases)
        except BgserveError as exc:
            log.warning("no warm-up of release %s on %s: %s", release_id, state.name, exc.message)
            return {"requests": wanted, "sent": 0, "skipped": exc.message}
        done = warm_slot(
            target,
            cases,
            wanted,
            concurrency=self.concurrency,
            timeout=state.plan.warmup.timeout_s,
        )
        return {
            "requests": wanted,
            "sent": done.answered,
            "failed": done.failed,
            "seconds": done.seconds,
            "timed_out": done.timed_out,
        }

    def _cases(self, name: str) -> list[GoldenCase]:
        """The inputs of the stored last comparison (of any pair: the inputs are the
        deployment's, whichever releases answered them)."""
        try:
            report = self.deployments.get_deployment(name).last_comparison
        except BgserveError:
            return []
        return cases_of(report)


def cases_of(report: Mapping[str, Any] | None) -> list[GoldenCase]:
    """The golden cases (id and inputs) of a stored comparison report; unreadable ones
    are left out."""
    cases = []
    for index, case in enumerate((report or {}).get("cases") or []):
        if not isinstance(case, Mapping):
            continue
        try:
            cases.append(
                GoldenCase(id=str(case.get("id", index)), inputs=dict(case.get("inputs") or {}))
            )
        except (ValidationError, TypeError, ValueError):
            continue
    return cases
