"""Request and response bodies of the control API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from bgserve.domain.release import Release
from bgserve.store import Event

# Ids are 32-bit in every supported database (PostgreSQL INTEGER); larger ones never exist.
MAX_ID = 2**31 - 1

DeploymentName = Annotated[
    str,
    Path(max_length=63, description="The deployment's name (a DNS-1123 label)", examples=["chat"]),
]
ReleaseId = Annotated[int, Path(ge=1, le=MAX_ID, description="The release's id", examples=[1])]


class Strict(BaseModel):
    """Unknown fields are an error, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


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
    id: int
    name: str
    model_uri: str
    model_version: int
    prompt_uri: str
    prompt_version: int
    bundle_uri: str
    bundle_version: int
    requested_model_uri: str
    requested_prompt_uri: str
    created_at: datetime

    @classmethod
    def of(cls, release: Release) -> ReleaseOut:
        return cls(
            id=release.id,
            name=release.name,
            model_uri=release.model_uri,
            model_version=release.model_version,
            prompt_uri=release.prompt_uri,
            prompt_version=release.prompt_version,
            bundle_uri=release.bundle_uri,
            bundle_version=release.bundle_version,
            requested_model_uri=release.model_ref,
            requested_prompt_uri=release.prompt_ref,
            created_at=release.created_at,
        )


class DeploymentCreate(Strict):
    name: str = Field(description="DNS-1123 label naming the deployment", examples=["chat"])
    release_id: int = Field(ge=1, le=MAX_ID, description="Release to deploy as blue at weight 100")


class GreenCreate(Strict):
    release_id: int = Field(ge=1, le=MAX_ID, description="Release to stage as green at weight 0")


class PromoteRequest(Strict):
    weight: int | None = Field(
        None, ge=0, le=100, description="One step to this green weight; omit to run the plan"
    )
    force: bool = Field(False, description="Skip a failed or missing comparison (recorded)")


class RevertRequest(Strict):
    pass


class SlotOut(BaseModel):
    release: ReleaseOut
    weight: int
    endpoint: str | None
    ready: bool


class GateOut(BaseModel):
    blue: int
    green: int
    passed: bool
    reasons: list[str]


class DeploymentOut(BaseModel):
    name: str
    phase: str
    version: int
    blue: SlotOut
    green: SlotOut | None
    standby: SlotOut | None
    plan: list[int]
    plan_interrupted: bool = Field(
        description="A plan is recorded but no promotion is walking it (bgserve restarted): "
        "resume with POST .../promote {}, or revert"
    )
    gate: GateOut | None
    data_plane_url: str | None
    last_comparison: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


class EventOut(BaseModel):
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
        return cls(
            id=event.id,
            at=event.at,
            principal=event.principal,
            action=event.action,
            reason=event.reason,
            weights_before=event.weights_before,
            weights_after=event.weights_after,
            details=event.details,
        )


class ErrorOut(BaseModel):
    error: str
    message: str
    field: str | None = None
    details: dict[str, Any] | None = None
