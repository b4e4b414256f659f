"""FastAPI dependencies: the application's parts and the caller's principal, per request.

Handlers name the part they use (the service, the comparer, the shadow collector, the
prompt validator) and get it here, from the components the app's lifespan built; none
reads the components from ``app.state`` itself.

The role dependencies do two things: they name the role a route needs (the
:class:`~bgserve.api.guard.AuthGate` reads them to authorize before the body is parsed)
and they hand the route its principal. The bearer scheme is declared for the OpenAPI
schema.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bgserve.api.auth import Authenticator, Principal, Role, require
from bgserve.app.comparer import Comparer
from bgserve.app.llm_models import LlmModels
from bgserve.app.prompt_validation import PromptValidator
from bgserve.app.service import Service
from bgserve.app.shadow import ShadowCollector
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


def comparer(request: Request) -> Comparer:
    """The comparer of this app (golden comparisons of blue and green)."""
    return components(request).comparer


def shadow_collector(request: Request) -> ShadowCollector:
    """The shadow collector of this app (mirrored traffic, scored)."""
    return components(request).shadow


def prompt_validator(request: Request) -> PromptValidator:
    """The prompt validator of this app (a candidate prompt against the live one)."""
    return components(request).validator


def llm_models(request: Request) -> LlmModels:
    """LLM registration for API callers (GGUF paths confined to the allowed directories)."""
    built = components(request)
    return LlmModels(built.registry, built.settings.llm_gguf_dirs)


def prompts_dir(request: Request) -> Path:
    """Where golden sets are looked up by name (``<prompts_dir>/<name>/golden.jsonl``)."""
    return components(request).settings.prompts_dir


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
ComparerDep = Annotated[Comparer, Depends(comparer)]
ShadowDep = Annotated[ShadowCollector, Depends(shadow_collector)]
ValidatorDep = Annotated[PromptValidator, Depends(prompt_validator)]
PromptsDirDep = Annotated[Path, Depends(prompts_dir)]
LlmModelsDep = Annotated[LlmModels, Depends(llm_models)]
ViewerDep = Annotated[Principal, Depends(viewer)]
DeployerDep = Annotated[Principal, Depends(deployer)]
AdminDep = Annotated[Principal, Depends(admin)]
