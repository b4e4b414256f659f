"""``create_app(settings)``: the control API's composition root."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from bgserve import __version__, gcpause
from bgserve.api import errors, webhook
from bgserve.api.auth import Authenticator
from bgserve.api.deps import ServiceDep
from bgserve.api.guard import AuthGate, GuardedRoute, RequestContext, open_paths
from bgserve.api.limits import BodyLimit
from bgserve.api.metrics import build_registry
from bgserve.api.origin import LocalOriginGuard
from bgserve.api.routes import compare, deployments, follow, models, prompts, releases, shadow
from bgserve.api.schemas import error_responses
from bgserve.compose import Components, build_components
from bgserve.settings import Settings
from bgserve.ui import routes as ui
from bgserve.ui.session import UiSession

log = logging.getLogger("bgserve.api")


def create_app(
    settings: Settings,
    build: Callable[[Settings], Components] = build_components,
) -> FastAPI:
    """The control API. Components are built (and slots restored) in the lifespan."""
    authenticator = Authenticator.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = await run_in_threadpool(build, settings)
        app.state.components = built
        app.state.metrics = build_registry(
            built.service, built.shadow, built.leadership, built.comparer.logger
        )
        try:
            await run_in_threadpool(built.start)
            gcpause.settle_after_start(refreeze=True)  # out of every full collection
            app.state.ready = True
            yield
        finally:
            gcpause.thaw()
            app.state.ready = False
            await run_in_threadpool(built.close)

    app = FastAPI(
        title="bgserve",
        version=__version__,
        lifespan=lifespan,
        description="Blue-green deployment of MLflow model + prompt releases.",
    )
    app.router.route_class = GuardedRoute
    app.state.authenticator = authenticator
    app.state.ui_session = UiSession(
        authenticator,
        ttl=settings.control.session_ttl_seconds,
        failures_per_minute=settings.control.sign_in_failures_per_minute,
    )
    app.state.ready = False
    errors.install(app)
    # Added innermost first: the request id wraps everything, auth runs before the body is read.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(
        AuthGate,
        authenticator=authenticator,
        # MLflow's webhook carries its own HMAC signature instead of a bearer token.
        open_paths=open_paths(app, settings.public_metrics_and_docs)
        | {"/ui", webhook.WEBHOOK_PATH},
        own_auth=("/ui/",),
    )
    if not authenticator.enabled:
        app.add_middleware(
            LocalOriginGuard, bind_host=settings.host, allowed_hosts=settings.control.allowed_hosts
        )
    app.add_middleware(RequestContext)
    app.include_router(releases.router)
    app.include_router(deployments.router)
    app.include_router(compare.router)
    app.include_router(prompts.router)
    app.include_router(shadow.router)
    app.include_router(models.router)
    app.include_router(follow.router)
    app.include_router(webhook.router)  # MLflow's deliveries: their own HMAC check
    app.include_router(ui.router)  # the dashboard: its own cookie sign-in and CSRF check
    _add_probes(app)
    return app


def _add_probes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["probes"])
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"])
    def readyz(request: Request) -> JSONResponse:
        """Readiness: components built and, on the leader, deployments restored. Says
        whether this replica leads (every replica serves calls; one advances plans); not
        ready, with the reason, while it may not take part in the leader election."""
        ready = bool(request.app.state.ready)
        body: dict[str, object] = {"ready": ready}
        components = getattr(request.app.state, "components", None)
        if ready and components is not None:
            body["leadership"] = components.leadership.status()
            forbidden = components.leadership.forbidden
            if forbidden is not None:  # it would accept plans that nothing ever advances
                body.update(ready=False, reason=forbidden.message)
                ready = False
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        tags=["probes"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **error_responses(401, 403)},
    )
    def metrics(request: Request, _service: ServiceDep) -> Response:
        """Prometheus text: weights, requests and errors per slot (a viewer token is needed
        when tokens are configured, unless BGSERVE_PUBLIC_METRICS_AND_DOCS is set)."""
        return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
