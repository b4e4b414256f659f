"""Turn stored state into response bodies (reads the backend for endpoints and readiness)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bgserve.api.plan_schemas import PlanOut
from bgserve.api.schemas import DeploymentOut, GateOut, ReleaseOut, SlotOut
from bgserve.app.service import Service
from bgserve.domain.rollout import DeploymentState
from bgserve.store import StoredDeployment


def _slot(service: Service, deployment: str, release_id: int, weight: int) -> SlotOut:
    info = service.slot_info(deployment, release_id)
    return SlotOut(
        release=ReleaseOut.of(service.get_release(release_id)),
        weight=weight,
        endpoint=info.endpoint if info else None,
        ready=bool(info and info.ready),
    )


def deployment_out(service: Service, stored: StoredDeployment) -> DeploymentOut:
    """The contract's deployment body for ``stored``."""
    state = stored.state
    return DeploymentOut(
        name=state.name,
        phase=state.phase.value,
        phase_reason=state.phase_reason,
        version=state.version,
        blue=_slot(service, state.name, state.blue, state.blue_weight),
        green=None
        if state.green is None
        else _slot(service, state.name, state.green, state.green_weight),
        standby=None if state.standby is None else _slot(service, state.name, state.standby, 0),
        plan=PlanOut.of(state.plan),
        gate=_gate(state),
        data_plane_url=service.data_plane_url(state.name),
        route=_route(service.route_report(state.name)),
        last_comparison=_summary(stored.last_comparison, state),
        created_at=stored.created_at,
        updated_at=stored.updated_at,
    )


def _route(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if report is None else dict(report)


def _gate(state: DeploymentState) -> GateOut | None:
    if state.gate is None:
        return None
    gate = GateOut.model_validate(state.gate, from_attributes=True)
    return gate.model_copy(update={"stale": state.gate_is_stale})


def _summary(report: dict[str, Any] | None, state: DeploymentState) -> dict[str, Any] | None:
    """The stored report without its per-case detail (the full report is read on its own).

    The report is stored with the gate of the pair it compared, so it is stale exactly
    when that gate no longer names the current blue and green.
    """
    if report is None:
        return None
    summary = {k: v for k, v in report.items() if k != "cases"}
    summary["stale"] = state.gate_for_current_pair() is None
    return summary
