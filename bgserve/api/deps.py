"""FastAPI dependencies: the service and the caller's principal, per request."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from bgserve.api.auth import Authenticator, Principal, Role, require
from bgserve.app.service import Service
from bgserve.compose import Components


def components(request: Request) -> Components:
    """The components the app's lifespan built."""
    built: Components = request.app.state.components
    return built


def service(request: Request) -> Service:
    """The service of this app."""
    return components(request).service


def _principal(request: Request, authorization: str | None) -> Principal:
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.authenticate(authorization)


def viewer(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    """Any authenticated caller."""
    return require(_principal(request, authorization), Role.VIEWER)


def deployer(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    """A caller allowed to stage, compare, promote and revert."""
    return require(_principal(request, authorization), Role.DEPLOYER)


def admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
    """A caller allowed to manage releases and settings."""
    return require(_principal(request, authorization), Role.ADMIN)


ServiceDep = Annotated[Service, Depends(service)]
ViewerDep = Annotated[Principal, Depends(viewer)]
DeployerDep = Annotated[Principal, Depends(deployer)]
AdminDep = Annotated[Principal, Depends(admin)]
