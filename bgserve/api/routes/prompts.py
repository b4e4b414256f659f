"""POST /prompts/validate: a candidate prompt against the live one, on the live model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from bgserve.api.deps import DeployerDep
from bgserve.api.guard import GuardedRoute
from bgserve.api.routes.compare import GoldenSource, cases_of
from bgserve.api.schemas import WRITE
from bgserve.compose import Components

router = APIRouter(prefix="/prompts", tags=["prompts"], route_class=GuardedRoute)


class ValidateRequest(GoldenSource):
    deployment: str = Field(description="Deployment whose live (blue) release is the baseline")
    prompt_uri: str | None = Field(None, description="Candidate as prompts:/name/version|@alias")
    template: str | None = Field(None, description="Candidate as a raw {{variable}} template")


@router.post("/validate", responses=WRITE)
def validate(body: ValidateRequest, request: Request, _who: DeployerDep) -> dict[str, Any]:
    """Lint the candidate and compare it with the live prompt; nothing is deployed."""
    parts: Components = request.app.state.components
    result = parts.validator.validate(
        body.deployment,
        cases_of(body, parts.settings.prompts_dir),
        prompt_uri=body.prompt_uri,
        template=body.template,
        thresholds=body.thresholds,
        golden_set=body.golden_set or "inline",
    )
    return result.model_dump(mode="json")
