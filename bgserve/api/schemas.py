"""Request and response bodies of the control API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from bgserve.api.plan_schemas import PlanOut, PlanRequest
from bgserve.domain.release import Release
from bgserve.errors import HINTS
from bgserve.store import Event

# Ids are 32-bit in every supported database (PostgreSQL INTEGER); larger ones never exist.
MAX_ID = 2**31 - 1

DeploymentName = Annotated[
    str,
    Path(max_length=63, description="The deployment's name (a DNS-1123 label)", examples=["chat"]),
]
ReleaseId = Annotated[int, Path(ge=1, le=MAX_ID, description="The release's id", examples=[1])]


class Strict(BaseModel):
    """A request body: unknown fields are an error, so a typo never passes silently, and
    types are strict, so ``true`` is not the number 1 and ``"50"`` is not the number 50."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ReleaseCreate(Strict):
    name: str = Field(description="DNS-1123 label naming the release", examples=["summarizer"])
    model_uri: str = Field(
        description="models:/<name>/<version> or models:/<name>@<alias>",
        examples=["models:/summarizer/3"],
    )
    prompt_uri: str = Field(
        description="prompts:/<name>/<version> or prompts:/<name>@<alias>",
        examples=["prompts:/summarize/2"],
    )


class ReleaseOut(BaseModel):
    """A registered release; aliases given at registration are resolved to versions."""

    id: int
    name: str
    model_uri: str
    model_version: int
    prompt_uri: str
    prompt_version: int
    bundle_uri: str
    bundle_version: int
    requested_model_uri: str = Field(
        validation_alias=AliasChoices("requested_model_uri", "model_ref"),
        description="The model URI as given at registration (an alias, or a version)",
    )
    requested_prompt_uri: str = Field(
        validation_alias=AliasChoices("requested_prompt_uri", "prompt_ref"),
        description="The prompt URI as given at registration (an alias, or a version)",
    )
    created_at: datetime

    @classmethod
    def of(cls, release: Release) -> ReleaseOut:
        """The body of ``release``."""
        return cls.model_validate(release, from_attributes=True)


class DeploymentCreate(Strict):
    name: str = Field(description="DNS-1123 label naming the deployment", examples=["chat"])
    release_id: int = Field(ge=1, le=MAX_ID, description="Release to deploy as blue at weight 100")


class GreenCreate(Strict):
    release_id: int = Field(ge=1, le=MAX_ID, description="Release to stage as green at weight 0")


class PromoteRequest(Strict):
    weight: int | None = Field(
        None, ge=0, le=100, description="One step to this green weight; omit to run the plan"
    )
    plan: PlanRequest | None = Field(
        None, description="The plan to run (defaults from settings); not with weight"
    )
    force: bool = Field(False, description="Skip a failed or missing comparison (recorded)")


class RevertRequest(Strict):
    pass


class SlotOut(BaseModel):
    release: ReleaseOut
    weight: int
    endpoint: str | None
    ready: bool


class LoosenedThresholdOut(BaseModel):
    """A per-call threshold looser than the server's own that a verdict rests on."""

    name: str
    used: float
    configured: float


class GateOut(BaseModel):
    """The verdict of the last comparison, and the blue/green pair it compared."""

    blue: int
    green: int
    passed: bool
    reasons: list[str]
    loosened: list[LoosenedThresholdOut] = Field(
        default_factory=list,
        description="Per-call thresholds looser than the server-side ones that the verdict "
        "rests on: a pass on them gates promotion like a failure (force needed)",
    )
    stale: bool = Field(
        False,
        description="The compared pair is no longer the deployment's blue and green: "
        "the verdict no longer gates promotion; compare again",
    )


class DeploymentOut(BaseModel):
    name: str
    phase: str
    phase_reason: str = Field(
        description="Why the deployment is in this phase, in one sentence",
        examples=["green release 7 takes 25% of the traffic"],
    )
    version: int
    blue: SlotOut
    green: SlotOut | None
    standby: SlotOut | None
    plan: PlanOut | None = Field(description="The promotion plan under way, if any")
    gate: GateOut | None
    data_plane_url: str | None
    route: dict[str, Any] | None = Field(
        None,
        description="What the router reported of the route last applied by this server "
        "(a Gateway API gateway, or istiod when bgserve waits for it): the route, the "
        "generation it took and who took it; null when nothing was reported",
        examples=[{"route": "models/bgserve-chat", "generation": 7, "taken_by": ["gw/eg"]}],
    )
    last_comparison: dict[str, Any] | None = Field(
        description="Summary of the last comparison report (without its cases); "
        '`"stale": true` when it compared another blue/green pair than the current one'
    )
    created_at: datetime
    updated_at: datetime


class EventOut(BaseModel):
    """One audit event of a deployment's history."""

    id: int
    at: datetime
    principal: str
    action: str
    reason: str
    weights_before: dict[str, int] | None
    weights_after: dict[str, int] | None
    details: dict[str, Any] | None

    @classmethod
    def of(cls, event: Event) -> EventOut:
        """The body of ``event``."""
        return cls.model_validate(event, from_attributes=True)


class ErrorOut(BaseModel):
    """The body of every error response."""

    error: str = Field(description="The error's class, e.g. InvalidInput, Conflict")
    message: str = Field(description="What went wrong and, where one exists, the fix")
    field: str | None = Field(None, description="The request field at fault")
    details: dict[str, Any] | None = Field(None, description="Structured detail")
    hint: str | None = Field(
        None, description="The fix as a code: " + ", ".join(sorted(HINTS)), examples=["compare"]
    )
    request_id: str | None = Field(
        None, description="On an unexpected error (500): the id the server log names"
    )


_ERRORS = {
    401: "No bearer token, or an unknown one",
    403: "The token's role does not allow this",
    404: "The deployment, release, or golden set does not exist",
    409: "The request does not fit the deployment's state (or lost a race): see hint",
    413: "The body (or a golden set in it) is over a size limit",
    422: "A field is missing, of the wrong type, or out of range: see field",
    503: "A dependency (MLflow, the serving backend) is unavailable: retry later",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` listing these error statuses with the error model."""
    return {code: {"model": ErrorOut, "description": _ERRORS[code]} for code in codes}


READ = error_responses(401, 403)
READ_PAGE = error_responses(401, 403, 422)
READ_ONE = error_responses(401, 403, 404, 422)
WRITE = error_responses(401, 403, 404, 409, 413, 422, 503)
