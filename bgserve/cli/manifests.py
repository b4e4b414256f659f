"""``bgserve render``: the Kubernetes objects of a stored deployment, without a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bgserve.cli.client import console, load_settings, say_error
from bgserve.errors import BgserveError


def render(
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="Deployment name")],
    backend: Annotated[
        str | None,
        typer.Option(
            help="kserve or seldon (default: BGSERVE_BACKEND if one of them, else kserve)"
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
    """Print the Kubernetes objects a backend would apply for a deployment's stored state.

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
