"""The dashboard at ``/ui``: pages, the live fragments the script polls, sign-in, and the
actions, which call the same application parts as the JSON API (the service, the comparer,
the shadow collector), never the API's handlers or a backend.

The auth gate leaves ``/ui`` to this module: every route here but sign-in and the static
assets reads the session cookie, and every change also needs the CSRF header.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import Field

from bgserve.api.auth import Principal, Role, require
from bgserve.api.compare_schemas import CompareRequest
from bgserve.api.deps import ComparerDep, PromptsDirDep, ServiceDep, ShadowDep, components
from bgserve.api.schemas import DeploymentName, GreenCreate, PromoteRequest, Strict
from bgserve.app.golden_sets import golden_cases
from bgserve.app.service import Service
from bgserve.app.shadow import ShadowCollector
from bgserve.errors import InvalidInput, NotFound, Unauthorized
from bgserve.store import StoredDeployment
from bgserve.ui import snapshot
from bgserve.ui.actions import actions_panel
from bgserve.ui.assets import ASSETS
from bgserve.ui.deployment_view import PageData, live_fragment, live_src
from bgserve.ui.html import e, page
from bgserve.ui.list_view import list_body, list_fragment
from bgserve.ui.session import SignInThrottled, UiSession, check_ui_header
from bgserve.ui.timeline import segments

router = APIRouter(prefix="/ui", include_in_schema=False)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def _session(request: Request) -> UiSession:
    state = request.app.state
    if not hasattr(state, "ui_session"):
        state.ui_session = UiSession(state.authenticator)
    session: UiSession = state.ui_session
    return session


def _traffic(request: Request) -> snapshot.TrafficCache:
    state = request.app.state
    if not hasattr(state, "ui_traffic"):
        state.ui_traffic = snapshot.TrafficCache()
    cache: snapshot.TrafficCache = state.ui_traffic
    return cache


def reader(request: Request) -> Principal:
    """Any signed-in caller (everyone when no token is configured). Raises Unauthorized."""
    return _session(request).principal(request)


def changer(request: Request) -> Principal:
    """A deployer or admin whose request carries the session's CSRF token."""
    session = _session(request)
    principal = require(session.principal(request), Role.DEPLOYER)
    session.check_change(request)
    return principal


def session_change(request: Request) -> Principal:
    """Any signed-in caller whose request carries the session's CSRF token (sign-out)."""
    session = _session(request)
    principal = session.principal(request)
    session.check_change(request)
    return principal


Reader = Annotated[Principal, Depends(reader)]
Changer = Annotated[Principal, Depends(changer)]
SessionChange = Annotated[Principal, Depends(session_change)]
At = Annotated[str | None, Query(max_length=64, description="An ISO 8601 time")]


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def _page(request: Request, who: Principal, title: str, body: str) -> HTMLResponse:
    session = _session(request)
    return _html(
        page(
            title,
            body,
            csrf=session.csrf_token(request),
            who=f"{who.name} ({who.role.name.lower()})",
            logout=session.needs_sign_in,
        )
    )


def _to_login() -> RedirectResponse:
    return RedirectResponse("/ui/login", status_code=303, headers=HEADERS)


@router.get("")
def index(request: Request, service: ServiceDep) -> Response:
    """The deployment list."""
    try:
        who = reader(request)
    except Unauthorized:
        return _to_login()
    fragment = list_fragment(snapshot.all_views(service), service.clock())
    return _page(request, who, "Deployments", list_body(fragment))


@router.get("/live")
def index_live(service: ServiceDep, _who: Reader) -> HTMLResponse:
    """The list's table, for the script's refresh."""
    return _html(list_fragment(snapshot.all_views(service), service.clock()))


def _moment(at: str | None) -> datetime | None:
    if at is None:
        return None
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        raise InvalidInput(
            f"at {at!r} is not a time: use ISO 8601, e.g. 2026-01-31T12:00:00Z", field="at"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _page_data(
    request: Request, service: Service, shadows: ShadowCollector, name: str, at: str | None
) -> PageData:
    stored = service.get_deployment(name)
    releases = snapshot.releases_by_id(service)
    try:
        shadow = shadows.report(name)
    except NotFound:
        shadow = None
    return PageData(
        view=snapshot.view_of(service, stored, releases),
        releases=releases,
        timeline=segments(service.history(name)),
        traffic=_slot_rows(request, service, name),
        shadow=shadow,
        shadow_percent=shadows.percent(name),
        now=service.clock(),
        moment=_moment(at),
        follow=components(request).following.find(name),
    )


def _slot_rows(request: Request, service: Service, name: str) -> list[dict[str, Any]] | None:
    rows = _traffic(request).rows(service)
    return None if rows is None else [dict(r) for r in snapshot.slot_counts(rows, name)]


@router.get("/d/{name}")
def deployment_page(
    name: DeploymentName, request: Request, service: ServiceDep, shadows: ShadowDep, at: At = None
) -> Response:
    """One deployment; ``?at=`` answers what was live at that time."""
    try:
        who = reader(request)
    except Unauthorized:
        return _to_login()
    data = _page_data(request, service, shadows, name, at)
    green = data.view.stored.state.green
    body = (
        f"<h1>{e(name)}</h1>"
        + actions_panel(name, who, list(data.releases.values()), data.releases.get(green or 0))
        + f"<div id='live' data-src='{e(live_src(name, data.moment))}'>"
        + live_fragment(data)
        + "</div>"
    )
    return _page(request, who, name, body)


@router.get("/d/{name}/live")
def deployment_live(
    name: DeploymentName,
    request: Request,
    service: ServiceDep,
    shadows: ShadowDep,
    _who: Reader,
    at: At = None,
) -> HTMLResponse:
    """The live part of a deployment page, for the script's refresh."""
    return _html(live_fragment(_page_data(request, service, shadows, name, at)))


# --- sign-in ------------------------------------------------------------------------


class SignIn(Strict):
    token: str = Field(min_length=1, max_length=4096, description="A bgserve bearer token")


@router.get("/login")
def login_page(request: Request) -> Response:
    """The sign-in form (nothing to sign in to when no token is configured)."""
    if not _session(request).needs_sign_in:
        return RedirectResponse("/ui", status_code=303, headers=HEADERS)
    body = (
        "<h1>Sign in</h1><form data-login='/ui/login' class='login'>"
        "<label for='token'>Token</label><input id='token' name='token' type='password' "
        "autocomplete='current-password' required><button type='submit'>Sign in</button>"
        "</form><p class='muted'>Signing in opens a session, kept in a cookie this site's "
        "scripts cannot read, until you sign out, close the browser or it expires.</p>"
    )
    return _html(page("Sign in", body, csrf="", who="", logout=False))


@router.post("/login")
def login(body: SignIn, request: Request) -> JSONResponse:
    """Check the token and open a session (a new id and CSRF token) in the cookie;
    429 with Retry-After once this address has sent too many wrong tokens."""
    check_ui_header(request)
    session = _session(request)
    address = request.client.host if request.client else "unknown"
    try:
        session_id, who = session.sign_in(body.token, address)
    except SignInThrottled as exc:
        wait = str(max(1, round(exc.retry_after)))
        headers = {**HEADERS, "retry-after": wait}
        return JSONResponse(
            {"error": "TooManyRequests", "message": exc.message}, status_code=429, headers=headers
        )
    response = JSONResponse({"principal": who.name, "role": who.role.name.lower()}, headers=HEADERS)
    # uvicorn has set the scheme from X-Forwarded-Proto when a trusted proxy sent it.
    session.keep(session_id, response, secure=request.url.scheme == "https")
    return response


@router.post("/logout")
def logout(request: Request, _who: SessionChange) -> JSONResponse:
    """End the session on the server and forget its cookie."""
    response = JSONResponse({"message": "signed out"}, headers=HEADERS)
    _session(request).sign_out(request, response)
    return response


# --- actions: the application's own operations, behind the cookie and the CSRF header ---


def _done(stored: StoredDeployment, what: str) -> dict[str, str]:
    state = stored.state
    green = f", green at {state.green_weight}%" if state.green is not None else ""
    return {"message": f"{what}: {state.name} is {state.phase.value}{green}"}


@router.post("/d/{name}/stage")
def stage(
    name: DeploymentName, body: GreenCreate, service: ServiceDep, who: Changer
) -> dict[str, str]:
    """Stage a release as green at weight 0."""
    return _done(service.stage_green(name, body.release_id, who.name), "staged")


@router.post("/d/{name}/compare")
def run_compare(
    name: DeploymentName,
    body: CompareRequest,
    comparer: ComparerDep,
    prompts_dir: PromptsDirDep,
    who: Changer,
) -> dict[str, str]:
    """Run a golden set on blue and green; its verdict gates promotion."""
    cases = golden_cases(body.golden_set, body.cases, prompts_dir)
    _, report = comparer.compare(name, cases, who.name, options=body.options())
    verdict = report.verdict
    outcome = "passed" if verdict.passed else "failed: " + " ".join(verdict.reasons)
    return {"message": f"comparison {outcome}"}


@router.post("/d/{name}/promote")
def promote(
    name: DeploymentName,
    body: PromoteRequest,
    service: ServiceDep,
    who: Changer,
    response: Response,
) -> dict[str, str]:
    """One step to ``weight``, or the plan."""
    plan = body.plan.to_plan(service.default_plan()) if body.plan else None
    stored = service.promote(name, who.name, weight=body.weight, plan=plan, force=body.force)
    if body.weight is None:
        response.status_code = 202
    return _done(stored, "promoted" if body.weight is not None else "plan started")


@router.post("/d/{name}/revert")
def revert(name: DeploymentName, service: ServiceDep, who: Changer) -> dict[str, str]:
    """All traffic back to the last good release."""
    return _done(service.revert(name, who.name), "reverted")


@router.get("/static/{asset}")
def static(asset: str) -> Response:
    """The stylesheet and the script (no secret in either: no sign-in needed)."""
    if asset not in ASSETS:
        raise NotFound(f"no asset {asset!r}: the dashboard has ui.css and ui.js")
    content, kind = ASSETS[asset]
    return Response(
        content,
        media_type=kind,
        headers={"cache-control": "max-age=86400", "x-content-type-options": "nosniff"},
    )
