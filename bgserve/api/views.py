"""Turn stored state into response bodies (reads the backend for endpoints and readiness)."""

from __future__ import annotations

from typing import Any

from bgserve.api.schemas import DeploymentOut, GateOut, ReleaseOut, SlotOut
from bgserve.app.service import Service
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
    gate = state.gate
    return DeploymentOut(
        name=state.name,
        phase=state.phase.value,
        version=state.version,
        blue=_slot(service, state.name, state.blue, state.blue_weight),
        green=None
        if state.green is None
        else _slot(service, state.name, state.green, state.green_weight),
        standby=None if state.standby is None else _slot(service, state.name, state.standby, 0),
        plan=list(state.plan),
        plan_interrupted=bool(state.plan) and not service.plan_running(state.name),
        gate=None
        if gate is None
        else GateOut(
            blue=gate.blue, green=gate.green, passed=gate.passed, reasons=list(gate.reasons)
        ),
        data_plane_url=service.backend.data_plane_url(state.name),
        last_comparison=_summary(stored.last_comparison),
        created_at=stored.created_at,
        updated_at=stored.updated_at,
    )


def _summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stored report without its per-case detail (GET .../comparison has it all)."""
    if report is None:
        return None
    return {k: v for k, v in report.items() if k != "cases"}
