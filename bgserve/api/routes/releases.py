"""POST/GET /releases."""

from __future__ import annotations

from fastapi import APIRouter, status

from bgserve.api.deps import DeployerDep, ServiceDep, ViewerDep
from bgserve.api.guard import GuardedRoute
from bgserve.api.schemas import READ, READ_ONE, WRITE, ReleaseCreate, ReleaseId, ReleaseOut

router = APIRouter(prefix="/releases", tags=["releases"], route_class=GuardedRoute)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ReleaseOut, responses=WRITE)
def create_release(body: ReleaseCreate, service: ServiceDep, who: DeployerDep) -> ReleaseOut:
    """Register a model version + prompt version as one release (aliases resolved now)."""
    release = service.register_release(body.name, body.model_uri, body.prompt_uri, who.name)
    return ReleaseOut.of(release)


@router.get("", response_model=list[ReleaseOut], responses=READ)
def list_releases(service: ServiceDep, _who: ViewerDep) -> list[ReleaseOut]:
    """Every release, oldest first."""
    return [ReleaseOut.of(r) for r in service.list_releases()]


@router.get("/{release_id}", response_model=ReleaseOut, responses=READ_ONE)
def get_release(release_id: ReleaseId, service: ServiceDep, _who: ViewerDep) -> ReleaseOut:
    """One release."""
    return ReleaseOut.of(service.get_release(release_id))
