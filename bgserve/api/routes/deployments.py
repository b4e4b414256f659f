"""The deployment routes: create, stage green, promote, revert, status, history."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from bgserve.api.deps import AdminDep, DeployerDep, ServiceDep, ViewerDep
from bgserve.api.guard import GuardedRoute
from bgserve.api.paging import Page, PageDep
from bgserve.api.schemas import (
    READ_ONE,
    READ_PAGE,
    WRITE,
    DeploymentCreate,
    DeploymentName,
    DeploymentOut,
    EventOut,
    GreenCreate,
    PromoteRequest,
    RevertRequest,
)
from bgserve.api.views import deployment_out

router = APIRouter(prefix="/deployments", tags=["deployments"], route_class=GuardedRoute)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DeploymentOut, responses=WRITE)
def create_deployment(
    body: DeploymentCreate, service: ServiceDep, who: DeployerDep
) -> DeploymentOut:
    """Deploy a release as blue at weight 100."""
    stored = service.create_deployment(body.name, body.release_id, who.name)
    return deployment_out(service, stored)


@router.get("", response_model=list[DeploymentOut] | Page[DeploymentOut], responses=READ_PAGE)
def list_deployments(
    service: ServiceDep, _who: ViewerDep, paging: PageDep
) -> list[DeploymentOut] | Page[DeploymentOut]:
    """Every deployment by name; with ``limit`` or ``cursor``, one page of them."""
    if not paging.paged:
        return [deployment_out(service, d) for d in service.list_deployments()]
    after = paging.after("deployments", str)
    rows = service.list_deployments(after=after, limit=paging.size + 1)
    found, cursor = paging.split("deployments", rows, lambda d: d.state.name)
    return Page(items=[deployment_out(service, d) for d in found], next_cursor=cursor)


@router.get("/{name}", response_model=DeploymentOut, responses=READ_ONE)
def get_deployment(name: DeploymentName, service: ServiceDep, _who: ViewerDep) -> DeploymentOut:
    """One deployment: phase, slots with weights, endpoints and readiness."""
    return deployment_out(service, service.get_deployment(name))


@router.post("/{name}/green", response_model=DeploymentOut, responses=WRITE)
def stage_green(
    name: DeploymentName, body: GreenCreate, service: ServiceDep, who: DeployerDep
) -> DeploymentOut:
    """Stage a release as green at weight 0 (409 while the current green takes traffic)."""
    return deployment_out(service, service.stage_green(name, body.release_id, who.name))


@router.post(
    "/{name}/promote",
    response_model=DeploymentOut,
    responses={
        **WRITE,
        202: {"model": DeploymentOut, "description": "The plan is stored and runs"},
    },
)
def promote(
    name: DeploymentName,
    body: PromoteRequest,
    service: ServiceDep,
    who: DeployerDep,
    response: Response,
) -> DeploymentOut:
    """One step to ``weight`` (200, done), or a promotion plan (202: stored, its first step
    applied; the rollout engine bakes, analyses and advances it). On a held plan, ``{}``
    is the operator's go-ahead to the next step."""
    plan = body.plan.to_plan(service.default_plan()) if body.plan else None
    stored = service.promote(name, who.name, weight=body.weight, plan=plan, force=body.force)
    if body.weight is None:
        response.status_code = status.HTTP_202_ACCEPTED
    return deployment_out(service, stored)


@router.post("/{name}/revert", response_model=DeploymentOut, responses=WRITE)
def revert(
    name: DeploymentName, service: ServiceDep, who: DeployerDep, body: RevertRequest | None = None
) -> DeploymentOut:
    """All traffic back to the last good release. Idempotent."""
    return deployment_out(service, service.revert(name, who.name))


@router.get("/{name}/history", response_model=list[EventOut] | Page[EventOut], responses=READ_ONE)
def history(
    name: DeploymentName, service: ServiceDep, _who: ViewerDep, paging: PageDep
) -> list[EventOut] | Page[EventOut]:
    """Audit events, oldest first: who, what, when, weights before and after; with
    ``limit`` or ``cursor``, one page of them."""
    if not paging.paged:
        return [EventOut.of(e) for e in service.history(name)]
    after = paging.after("history", int)
    rows = service.history(name, after_id=after, limit=paging.size + 1)
    found, cursor = paging.split("history", rows, lambda e: e.id)
    return Page(items=[EventOut.of(e) for e in found], next_cursor=cursor)


@router.delete("/{name}/standby", response_model=DeploymentOut, responses=WRITE)
def retire_standby(name: DeploymentName, service: ServiceDep, who: AdminDep) -> DeploymentOut:
    """Retire the standby (previous blue) early, giving up the instant revert (admin only)."""
    return deployment_out(service, service.retire_standby(name, who.name))
