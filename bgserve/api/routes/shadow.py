"""PUT, GET and DELETE /deployments/{name}/shadow: live traffic mirrored to green, scored."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field, ValidationError

from bgserve.api.deps import DeployerDep, ShadowDep, ViewerDep
from bgserve.api.guard import GuardedRoute
from bgserve.api.schemas import READ_ONE, WRITE, DeploymentName, Strict
from bgserve.domain.shadow import ShadowPercent, ShadowReport, shadow_assertions
from bgserve.errors import InvalidInput
from bgserve.evaluation.assertions import Assertion

router = APIRouter(prefix="/deployments", tags=["shadow"], route_class=GuardedRoute)


class ShadowRequest(Strict):
    """Mirror a share of blue's requests to green and score green's answers against blue's."""

    percent: ShadowPercent
    max_pairs: int | None = Field(
        None, ge=1, description="Stop mirroring after this many pairs (default: never)"
    )
    assertions: list[dict[str, Any]] | None = Field(
        None,
        alias="assert",
        description="Checks run on both answers of each pair, as in golden.jsonl; only types "
        "that need no expected answer: contains, icontains, is_json, max_latency_ms, regex",
    )


def _assertions(raw: list[dict[str, Any]] | None) -> list[Assertion]:
    try:
        return list(shadow_assertions([Assertion.model_validate(a) for a in raw or []]))
    except (ValidationError, ValueError) as exc:
        message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise InvalidInput(f"assert: {message}", field="assert") from exc


def shadow_body(percent: int, report: ShadowReport) -> dict[str, Any]:
    """The answer of every shadow route: the mirrored percent and the whole report (each
    of ``worst`` carries ``inputs``, ``blue``, ``green``, ``similarity`` and a word diff)."""
    return {"percent": percent, **report.model_dump(mode="json")}


@router.put("/{name}/shadow", responses=WRITE)
def start_shadow(
    name: DeploymentName, body: ShadowRequest, collector: ShadowDep, _who: DeployerDep
) -> dict[str, Any]:
    """Mirror ``percent`` of the requests blue answers to green; clients only ever get
    blue's answer. A new blue/green pair starts a new report."""
    report = collector.start_shadow(
        name, body.percent, body.max_pairs, _assertions(body.assertions)
    )
    return shadow_body(collector.percent(name), report)


@router.delete("/{name}/shadow", responses=WRITE)
def stop_shadow(name: DeploymentName, collector: ShadowDep, _who: DeployerDep) -> dict[str, Any]:
    """Stop mirroring; the report stays readable until the blue/green pair changes."""
    report = collector.stop_shadow(name)
    if report is None:
        return {"percent": 0, "pairs": 0}
    return shadow_body(0, report)


@router.get("/{name}/shadow", responses=READ_ONE)
def shadow_report(name: DeploymentName, collector: ShadowDep, _who: ViewerDep) -> dict[str, Any]:
    """The live comparison of green against blue on mirrored traffic."""
    return shadow_body(collector.percent(name), collector.report(name))
