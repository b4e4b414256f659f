"""Follow rules: ``PUT``, ``GET`` and ``DELETE /deployments/{name}/follow`` and
``GET /follow``. MLflow's deliveries arrive at :mod:`bgserve.api.webhook`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from bgserve.api.deps import DeployerDep, ServiceDep, ViewerDep, components
from bgserve.api.guard import GuardedRoute
from bgserve.api.plan_schemas import PlanRequest
from bgserve.api.schemas import READ, READ_ONE, WRITE, DeploymentName, Strict
from bgserve.app.follow_rules import Following, RuleRequest, RuleView

router = APIRouter(tags=["follow"], route_class=GuardedRoute)


def following(request: Request) -> Following:
    """The follow rules of this app."""
    return components(request).following


FollowingDep = Annotated[Following, Depends(following)]


class FollowRequest(Strict):
    """What a deployment follows; names left out are blue's model and prompt."""

    prompt_alias: str | None = Field(
        None, max_length=255, description="Follow this alias of the prompt", examples=["candidate"]
    )
    prompt_name: str | None = Field(
        None, max_length=255, description="The prompt whose alias is followed (default: blue's)"
    )
    model_alias: str | None = Field(
        None, max_length=255, description="Follow this alias of the model"
    )
    model_name: str | None = Field(
        None, max_length=255, description="The model whose alias is followed (default: blue's)"
    )
    golden_set: str | None = Field(
        None,
        max_length=128,
        description="Golden set of each comparison (default: the prompt's name)",
    )
    auto_promote: bool = Field(
        False,
        description="Start the plan after a passing verdict (never after a failing one)",
    )
    plan: PlanRequest | None = Field(
        None, description="The plan auto_promote runs; its first step must be below 100"
    )
    shadow_percent: int = Field(
        0, ge=0, le=100, description="Mirror this share of blue's traffic to each candidate"
    )


class FollowOut(BaseModel):
    """A deployment's follow rule, its last trigger and what it did last."""

    deployment: str
    follows: list[str] = Field(
        description="The followed aliases, e.g. prompts:/summarize@candidate"
    )
    golden_set: str
    auto_promote: bool
    plan: dict[str, Any] | None = Field(description="The plan auto_promote runs: steps, bake_s")
    shadow_percent: int
    pending: bool = Field(description="A trigger waits to be handled")
    last_event: dict[str, Any] | None = Field(description="The last trigger: webhook, poll or rule")
    last_outcome: dict[str, Any] | None = Field(description="What the last handling did")
    aliases: dict[str, int | None] = Field(description="Where the aliases pointed at that handling")
    staged_release: int | None = Field(description="The release the rule staged last")
    updated_at: datetime

    @classmethod
    def of(cls, view: RuleView) -> FollowOut:
        rule, progress = view.rule, view.progress
        plan = None
        if rule.plan is not None:
            plan = {"steps": list(rule.plan.steps), "bake_s": rule.plan.bake_s}
        return cls(
            deployment=rule.deployment,
            follows=[f.uri for f in rule.followed],
            golden_set=rule.golden_set,
            auto_promote=rule.auto_promote,
            plan=plan,
            shadow_percent=rule.shadow_percent,
            pending=view.pending,
            last_event=None if view.trigger is None else dict(view.trigger),
            last_outcome=dict(progress.outcome) or None,
            aliases=dict(progress.aliases),
            staged_release=progress.staged,
            updated_at=view.updated_at,
        )


@router.put("/deployments/{name}/follow", response_model=FollowOut, responses=WRITE)
def set_follow(
    name: DeploymentName,
    body: FollowRequest,
    rules: FollowingDep,
    service: ServiceDep,
    who: DeployerDep,
) -> FollowOut:
    """Follow MLflow aliases: each move stages the candidate, compares it on the golden
    set and writes the verdict back as tags on its versions; with ``auto_promote`` a pass
    starts the plan. The aliases are looked at at once."""
    plan = body.plan.to_plan(service.default_plan()) if body.plan else None
    request = RuleRequest(
        prompt_alias=body.prompt_alias,
        prompt_name=body.prompt_name,
        model_alias=body.model_alias,
        model_name=body.model_name,
        golden_set=body.golden_set,
        auto_promote=body.auto_promote,
        plan=plan,
        shadow_percent=body.shadow_percent,
    )
    return FollowOut.of(rules.set_rule(name, request, who.name))


@router.get("/deployments/{name}/follow", response_model=FollowOut, responses=READ_ONE)
def get_follow(name: DeploymentName, rules: FollowingDep, _who: ViewerDep) -> FollowOut:
    """The deployment's follow rule, its last trigger and what it did last."""
    return FollowOut.of(rules.get(name))


@router.delete("/deployments/{name}/follow", responses=WRITE)
def stop_follow(name: DeploymentName, rules: FollowingDep, who: DeployerDep) -> dict[str, Any]:
    """Stop following (idempotent); a handling under way finishes."""
    return {"deployment": name, "removed": rules.stop(name, who.name)}


@router.get("/follow", response_model=list[FollowOut], responses=READ)
def list_follow(rules: FollowingDep, _who: ViewerDep) -> list[FollowOut]:
    """Every deployment's follow rule."""
    return [FollowOut.of(view) for view in rules.list_rules()]
