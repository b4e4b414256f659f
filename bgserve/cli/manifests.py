"""``bgserve render``: the Kubernetes objects (or SageMaker API requests) of a stored
deployment, without a cluster or an AWS account."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from bgserve.cli.client import console, load_settings, say_error
from bgserve.domain.release import Release
from bgserve.domain.state import DeploymentState
from bgserve.errors import BgserveError, InvalidInput
from bgserve.settings import Settings


def render(
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="Deployment name")],
    backend: Annotated[
        str | None,
        typer.Option(
            help="kserve, seldon or sagemaker (default: BGSERVE_BACKEND if one of them, "
            "else kserve)"
        ),
    ] = None,
    flavour: Annotated[
        str | None, typer.Option(help="Seldon Core v1 or v2 (default: BGSERVE_SELDON_FLAVOUR)")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Write one file per object here")] = None,
    state_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the state")] = None,
    shadow: Annotated[
        int | None,
        typer.Option(
            help="Also mirror this percent of requests to green (the platform's "
            "mirror: green's answers are discarded, not scored)"
        ),
    ] = None,
) -> None:
    """Print the Kubernetes objects a backend would apply for a deployment's stored state
    (for SageMaker: the API requests that build its endpoint, as the AWS CLI takes them).

    Reads the state database directly, and for KServe the MLflow registry (which
    releases pin an LLM base model); contacts no cluster and no running bgserve.
    """
    from bgserve.compose import build_registry, build_store
    from bgserve.compose.backends import llm_lookup
    from bgserve.kube.mirror import mirror_route
    from bgserve.manifests import render_backend, render_deployment, render_yaml, write_objects

    if flavour not in (None, "v1", "v2"):
        raise typer.BadParameter(f"{flavour!r} is not v1 or v2", param_hint="--flavour")
    settings = load_settings({"state_url": state_url, "seldon_flavour": flavour})
    try:
        store = build_store(settings)
        try:
            state = store.get_deployment(deployment).state
            releases = {r.release_id: store.get_release(r.release_id) for r in state.routes()}
        finally:
            store.close()
        chosen = render_backend(backend, settings)
        if chosen == "sagemaker":
            _render_sagemaker(state, releases, settings, shadow, output)
            return
        llms = llm_lookup(build_registry(settings)) if chosen == "kserve" else None
        objects = render_deployment(state, releases, settings, chosen, llms)
        if shadow is not None:
            namespace = settings.kube.namespace
            objects = mirror_route(objects, deployment, state.green, shadow, namespace)
    except BgserveError as exc:
        say_error(exc.message)
        raise typer.Exit(1) from exc
    if output is None:
        typer.echo(render_yaml(objects), nl=False)
        return
    for path in write_objects(objects, output):
        console.print(f"wrote {path}")


def _render_sagemaker(
    state: DeploymentState,
    releases: Mapping[int, Release],
    settings: Settings,
    shadow: int | None,
    output: Path | None,
) -> None:
    from bgserve.cloud.sagemaker.render import endpoint_requests, request_filename, request_yaml
    from bgserve.compose.backends import cloud_slot_env

    if shadow is not None:
        raise InvalidInput("--shadow renders Kubernetes mirrors only", field="shadow")
    env = cloud_slot_env(settings)
    requests = endpoint_requests(state.name, state.routes(), releases, settings.sagemaker, env)
    if output is None:
        typer.echo("".join(request_yaml(c, r) for c, r in requests), nl=False)
        return
    output.mkdir(parents=True, exist_ok=True)
    for command, request in requests:
        path = output / request_filename(command, request)
        path.write_text(request_yaml(command, request), encoding="utf-8")
        console.print(f"wrote {path}")
