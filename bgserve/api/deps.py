"""FastAPI dependencies: the service and the caller's principal, per request.

The role dependencies do two things: they name the role a route needs (the
:class:`~bgserve.api.guard.AuthGate` reads them to authorize before the body is parsed)
and they hand the route its principal. The bearer scheme is declared for the OpenAPI
schema.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bgserve.api.auth import Authenticator, Principal, Role, require
from bgserve.app.service import Service
from bgserve.compose import Components

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="A token from BGSERVE_AUTH_TOKENS or the tokens file; roles are viewer, "
    "deployer and admin. Not needed when no token is configured.",
)
Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def components(request: Request) -> Components:
    """The components the app's lifespan built."""
    built: Components = request.app.state.components
    return built


def service(request: Request) -> Service:
    """The service of this app."""
    return components(request).service


def principal_of(request: Request) -> Principal:
    """The caller: as the auth gate found it, else from the ``Authorization`` header."""
    found = request.scope.get("state", {}).get("principal")
    if isinstance(found, Principal):  # the gate already authenticated this request
        return found
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator.authenticate(request.headers.get("authorization"))


def viewer(request: Request, _token: Bearer) -> Principal:
    """Any authenticated caller."""
    return require(principal_of(request), Role.VIEWER)


def deployer(request: Request, _token: Bearer) -> Principal:
    """A caller allowed to stage, compare, promote and revert."""
    return require(principal_of(request), Role.DEPLOYER)


def admin(request: Request, _token: Bearer) -> Principal:
    """A caller allowed to manage releases and settings."""
    return require(principal_of(request), Role.ADMIN)


ServiceDep = Annotated[Service, Depends(service)]
ViewerDep = Annotated[Principal, Depends(viewer)]
DeployerDep = Annotated[Principal, Depends(deployer)]
AdminDep = Annotated[Principal, Depends(admin)]
