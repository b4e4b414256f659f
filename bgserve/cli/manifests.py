"""``bgserve render``: the Kubernetes objects (SageMaker API requests, Azure ML CLI v2
documents, Vertex AI REST requests) of a stored deployment, without a cluster or a cloud account."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

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
            help="kserve, seldon, sagemaker, azureml, databricks or vertex (default: "
            "BGSERVE_BACKEND if one of them, else kserve)"
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
    (for SageMaker: the API requests that build its endpoint, as the AWS CLI takes them; for
    Azure ML: the endpoint and deployment documents, as ``az ml`` takes them; for Databricks:
    the serving endpoint's JSON, as the REST API takes it; for Vertex AI: the REST requests
    that build its endpoint).

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
        if chosen in ("sagemaker", "azureml", "databricks", "vertex"):
            if shadow is not None:
                raise InvalidInput("--shadow renders Kubernetes mirrors only", field="shadow")
            _render_cloud(chosen, state, releases, settings, output)
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


def _render_cloud(
    backend: str,
    state: DeploymentState,
    releases: Mapping[int, Release],
    settings: Settings,
    output: Path | None,
) -> None:
    """The SageMaker API requests, Azure ML CLI documents or Vertex AI REST requests of
    ``state``."""
    from bgserve.compose.backends import cloud_slot_env

    env, routes = cloud_slot_env(settings), state.routes()
    if backend == "sagemaker":
        from bgserve.cloud.sagemaker import render as sagemaker

        requests = sagemaker.endpoint_requests(
            state.name, routes, releases, settings.sagemaker, env
        )
        _write_documents(requests, sagemaker.request_yaml, sagemaker.request_filename, output)
        return
    if backend == "databricks":
        from bgserve.cloud.databricks import render as databricks

        bodies = databricks.endpoint_documents(state.name, routes, releases, settings.databricks)
        _write_documents(bodies, databricks.document_json, databricks.document_filename, output)
        return
    if backend == "vertex":
        from bgserve.cloud.vertex import render as vertex

        calls = vertex.endpoint_requests(state.name, routes, releases, settings.vertex, env)
        _write_documents(calls, vertex.request_yaml, vertex.request_filename, output)
        return
    from bgserve.cloud.azureml import render as azureml

    documents = azureml.endpoint_documents(state.name, routes, releases, settings.azureml, env)
    _write_documents(documents, azureml.document_yaml, azureml.document_filename, output)


Render = Callable[[str, Mapping[str, Any]], str]


def _write_documents(
    documents: Sequence[tuple[str, Mapping[str, Any]]],
    as_yaml: Render,
    filename: Render,
    output: Path | None,
) -> None:
    """Print the documents, or write each to its own file in ``output``."""
    if output is None:
        typer.echo("".join(as_yaml(c, d) for c, d in documents), nl=False)
        return
    output.mkdir(parents=True, exist_ok=True)
    for command, document in documents:
        path = output / filename(command, document)
        path.write_text(as_yaml(command, document), encoding="utf-8")
        console.print(f"wrote {path}")
