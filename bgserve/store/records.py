"""What the store hands back (deployments with metadata, history events) and the
mapping between domain objects and table rows."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bgserve.domain.plan import plan_json, plan_of
from bgserve.domain.release import Release
from bgserve.domain.rollout import DeploymentState, Gate
from bgserve.domain.state import LoosenedThreshold


@dataclass(frozen=True)
class StoredDeployment:
    """A deployment's state plus what the store keeps beside it."""

    state: DeploymentState
    last_comparison: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Event:
    """One entry of a deployment's history: who did what, when, weights before and after."""

    id: int
    deployment: str
    at: datetime
    principal: str
    action: str
    reason: str
    weights_before: dict[str, int] | None
    weights_after: dict[str, int] | None
    details: dict[str, Any] | None


def weights_of(state: DeploymentState | None) -> dict[str, int] | None:
    """Weights per release id (as strings, for JSON) of a state, or None."""
    if state is None:
        return None
    return {str(r.release_id): r.weight for r in state.routes()}


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime."""
    # SQLite hands back naive datetimes even for timezone-aware columns.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def release_from_row(row: Mapping[Any, Any]) -> Release:
    """The release a ``releases`` row holds."""
    fields = dict(row)
    fields["created_at"] = utc(fields["created_at"])
    return Release(**fields)


def event_from_row(row: Mapping[Any, Any]) -> Event:
    """The event an ``events`` row holds."""
    return Event(**(dict(row) | {"at": utc(row["at"])}))


def state_columns(state: DeploymentState) -> dict[str, Any]:
    """The ``deployments`` columns that hold ``state``."""
    gate = state.gate
    return {
        "name": state.name,
        "blue": state.blue,
        "green": state.green,
        "green_weight": state.green_weight,
        "standby": state.standby,
        "reverted": state.reverted,
        "gate": None
        if gate is None
        else {
            "blue": gate.blue,
            "green": gate.green,
            "passed": gate.passed,
            "reasons": list(gate.reasons),
            "loosened": [vars(t) for t in gate.loosened],
        },
        "plan": plan_json(state.plan) or [],
        "version": state.version,
    }


def gate_of(stored: Mapping[str, Any]) -> Gate:
    """The gate a ``deployments.gate`` JSON value holds (rows from before the loosened
    thresholds were recorded have none)."""
    loosened = tuple(LoosenedThreshold(**t) for t in stored.get("loosened", ()))
    reasons = tuple(stored["reasons"])
    return Gate(stored["blue"], stored["green"], stored["passed"], reasons, loosened)


def deployment_from_row(row: Mapping[Any, Any]) -> StoredDeployment:
    """The deployment a ``deployments`` row holds."""
    gate = row["gate"]
    if isinstance(gate, str):  # some drivers hand JSON back as text
        gate = json.loads(gate)
    state = DeploymentState(
        name=row["name"],
        blue=row["blue"],
        green=row["green"],
        green_weight=row["green_weight"],
        standby=row["standby"],
        reverted=bool(row["reverted"]),
        gate=None if gate is None else gate_of(gate),
        plan=plan_of(row["plan"]),
        version=row["version"],
    )
    return StoredDeployment(
        state=state,
        last_comparison=row["last_comparison"],
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
    )
