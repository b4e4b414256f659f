"""POST /prompts/validate: a candidate prompt against the live one, on the live model."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field

from bgserve.api.compare_schemas import GoldenSource
from bgserve.api.deps import DeployerDep, PromptsDirDep, ValidatorDep
from bgserve.api.guard import GuardedRoute
from bgserve.api.schemas import WRITE
from bgserve.app.golden_sets import golden_cases

router = APIRouter(prefix="/prompts", tags=["prompts"], route_class=GuardedRoute)


class ValidateRequest(GoldenSource):
    """A candidate prompt (exactly one of prompt_uri, template or messages) and the golden
    set to compare it on against the live prompt."""

    deployment: str = Field(description="Deployment whose live (blue) release is the baseline")
    prompt_uri: str | None = Field(
        None, description="Candidate as prompts:/name/version|@alias, a text or chat prompt"
    )
    template: str | None = Field(None, description="Candidate as a raw {{variable}} template")
    messages: list[dict[str, Any]] | None = Field(
        None,
        description="Candidate as a chat prompt: {role, content} messages with {{variable}}s",
        examples=[[{"role": "system", "content": "Answer for {{audience}}."}]],
    )
    generation: dict[str, Any] | None = Field(
        None,
        alias="model_config",
        description="With messages: the chat prompt's model_config (temperature, max_tokens, "
        "top_p, stop, seed)",
    )
    response_format: dict[str, Any] | None = Field(
        None, description="With messages: a JSON schema the answers must match"
    )


@router.post("/validate", responses=WRITE)
def validate(
    body: ValidateRequest, validator: ValidatorDep, prompts_dir: PromptsDirDep, _who: DeployerDep
) -> dict[str, Any]:
    """Lint the candidate and compare it with the live prompt; nothing is deployed."""
    result = validator.validate(
        body.deployment,
        golden_cases(body.golden_set, body.cases, prompts_dir),
        prompt_uri=body.prompt_uri,
        template=body.template,
        messages=body.messages,
        model_config=body.generation,
        response_format=body.response_format,
        thresholds=body.thresholds,
        golden_set=body.golden_set or "inline",
    )
    return result.model_dump(mode="json")
