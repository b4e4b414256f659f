"""The ``bgserve`` command: serve, slot, demo, and verbs that call a running server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bgserve.cli.client import (
    DEFAULT_URL,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    call,
    console,
    deployment_panel,
    err_console,
    history_table,
    release_table,
    show,
)
from bgserve.cli.prompts import compare, prompts_app
from bgserve.errors import BgserveError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Blue-green deployment of MLflow model + prompt releases.",
)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Control API bind address")] = None,
    port: Annotated[int | None, typer.Option(help="Control API port")] = None,
    data_port: Annotated[int | None, typer.Option(help="Data-plane (router) port")] = None,
    state_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the state")] = None,
) -> None:
    """Run the control API and, with the local backend, the data plane."""
    import uvicorn

    from bgserve.api.app import create_app
    from bgserve.settings import Settings

    given: dict[str, object] = {
        "host": host,
        "port": port,
        "data_port": data_port,
        "state_url": state_url,
    }
    settings = Settings.model_validate({k: v for k, v in given.items() if v is not None})
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def slot(ctx: typer.Context) -> None:
    """Serve one bundle over Open Inference Protocol v2 (what every backend runs)."""
    from bgserve.backends.local.slot_server import main as slot_main

    slot_main(list(ctx.args))


@app.command()
def demo(
    keep: Annotated[bool, typer.Option(help="Keep the temporary directory")] = False,
) -> None:
    """Run the whole flow on this machine: register, deploy, stage, promote, revert."""
    from bgserve.demo.run import run_demo

    raise typer.Exit(run_demo(keep=keep))


@app.command()
def release(
    name: Annotated[str, typer.Argument(help="Release name (DNS-1123 label)")],
    model_uri: Annotated[str, typer.Option("--model-uri", "-m", help="models:/name/version")],
    prompt_uri: Annotated[str, typer.Option("--prompt-uri", "-p", help="prompts:/name/version")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a model version + prompt version as a release."""
    body = {"name": name, "model_uri": model_uri, "prompt_uri": prompt_uri}
    payload = call("POST", url, "/releases", token, body)
    show(payload, as_json, lambda r: console.print(release_table([r])))


@app.command()
def releases(url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List releases."""
    show(call("GET", url, "/releases", token), as_json, lambda r: console.print(release_table(r)))


@app.command()
def deploy(
    name: Annotated[str, typer.Argument(help="Deployment name (DNS-1123 label)")],
    release_id: Annotated[int, typer.Option("--release", "-r", help="Release id to run as blue")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a deployment with a release as blue at 100%."""
    payload = call("POST", url, "/deployments", token, {"name": name, "release_id": release_id})
    show(payload, as_json, deployment_panel)


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    release_id: Annotated[int, typer.Option("--release", "-r", help="Release id to stage")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stage a release as green at 0%."""
    payload = call("POST", url, f"/deployments/{name}/green", token, {"release_id": release_id})
    show(payload, as_json, deployment_panel)


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    weight: Annotated[int | None, typer.Option(help="One step to this green weight")] = None,
    force: Annotated[bool, typer.Option(help="Skip a failed or missing comparison")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move green one step, or (without --weight) through the step plan to 100%."""
    body: dict[str, Any] = {"force": force}
    if weight is not None:
        body["weight"] = weight
    payload = call("POST", url, f"/deployments/{name}/promote", token, body)
    show(payload, as_json, deployment_panel)


@app.command()
def revert(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send all traffic back to the last good release."""
    payload = call("POST", url, f"/deployments/{name}/revert", token, {})
    show(payload, as_json, deployment_panel)


@app.command()
def status(
    name: Annotated[str | None, typer.Argument(help="Deployment name (all when omitted)")] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show deployments: phase, slots, weights, readiness."""
    if name:
        show(call("GET", url, f"/deployments/{name}", token), as_json, deployment_panel)
        return
    show(call("GET", url, "/deployments", token), as_json, _deployment_panels)


def _deployment_panels(deployments: list[dict[str, Any]]) -> None:
    if not deployments:
        console.print("no deployments yet: create one with `bgserve deploy NAME --release ID`")
    for deployment in deployments:
        deployment_panel(deployment)


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show who changed what, when, with weights before and after."""
    payload = call("GET", url, f"/deployments/{name}/history", token)
    show(payload, as_json, lambda e: console.print(history_table(e)))


@app.command()
def render(
    deployment: Annotated[str, typer.Option("--deployment", "-d", help="Deployment name")],
    backend: Annotated[str, typer.Option(help="kserve or seldon")] = "kserve",
    flavour: Annotated[
        str | None, typer.Option(help="Seldon Core v1 or v2 (default: BGSERVE_SELDON_FLAVOUR)")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Write one file per object here")] = None,
    state_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL of the state")] = None,
) -> None:
    """Print the Kubernetes objects a backend would apply for a deployment's stored state.

    Reads the state database directly; contacts no cluster and no running bgserve.
    """
    from bgserve.manifests import render_deployment, render_yaml, write_objects
    from bgserve.settings import Settings
    from bgserve.store import Store

    if flavour not in (None, "v1", "v2"):
        raise typer.BadParameter(f"{flavour!r} is not v1 or v2", param_hint="--flavour")
    overrides = {"state_url": state_url, "seldon_flavour": flavour}
    settings = Settings.model_validate({k: v for k, v in overrides.items() if v})
    try:
        store = Store(settings.resolved_state_url)
        try:
            state = store.get_deployment(deployment).state
            releases = {r.release_id: store.get_release(r.release_id) for r in state.routes()}
        finally:
            store.close()
        objects = render_deployment(state, releases, settings, backend)
    except BgserveError as exc:
        err_console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from exc
    if output is None:
        typer.echo(render_yaml(objects), nl=False)
        return
    for path in write_objects(objects, output):
        console.print(f"wrote {path}")


app.command()(compare)
app.add_typer(prompts_app, name="prompts")


def main() -> None:
    """Console-script entry point."""
    app()
