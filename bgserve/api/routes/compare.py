"""POST /deployments/{name}/compare and GET /deployments/{name}/comparison."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from bgserve.api.compare_schemas import CompareRequest
from bgserve.api.deps import ComparerDep, DeployerDep, PromptsDirDep, ServiceDep, ViewerDep
from bgserve.api.guard import GuardedRoute
from bgserve.api.schemas import READ_ONE, WRITE, DeploymentName
from bgserve.app.golden_sets import golden_cases
from bgserve.errors import NotFound

router = APIRouter(prefix="/deployments", tags=["comparison"], route_class=GuardedRoute)


@router.post("/{name}/compare", responses=WRITE)
def compare(
    name: DeploymentName,
    body: CompareRequest,
    comparer: ComparerDep,
    prompts_dir: PromptsDirDep,
    who: DeployerDep,
) -> dict[str, Any]:
    """Run the golden set on blue and green directly; the verdict gates promotion."""
    cases = golden_cases(body.golden_set, body.cases, prompts_dir)
    _, report = comparer.compare(name, cases, who.name, options=body.options())
    return report.model_dump(mode="json")


@router.get("/{name}/comparison", responses=READ_ONE)
def last_comparison(name: DeploymentName, service: ServiceDep, _who: ViewerDep) -> dict[str, Any]:
    """The full report of the deployment's last comparison."""
    stored = service.get_deployment(name)
    if stored.last_comparison is None:
        raise NotFound(f"{name} has no comparison yet: compare blue and green", hint="compare")
    return stored.last_comparison
