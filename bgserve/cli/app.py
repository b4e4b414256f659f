"""The ``bgserve`` command: serve, slot, demo, quickstart, and verbs that call a running server."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from bgserve.cli.bundles import export_bundle
from bgserve.cli.client import (
    Remote,
    console,
    deployment_panel,
    history_table,
    load_settings,
    release_table,
    remote_verb,
    say_error,
)
from bgserve.cli.db import db_app
from bgserve.cli.manifests import render
from bgserve.cli.models import models_app
from bgserve.cli.plan_view import watch
from bgserve.cli.prompts import compare, prompts_app
from bgserve.cli.shadow import shadow
from bgserve.errors import BgserveError
from bgserve.settings import Settings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    # Plain help: the rich renderer of this typer shows flags as if they took a value.
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    help="Blue-green deployment of MLflow model + prompt releases.",
)


def _default(field: str) -> Any:
    return Settings.model_fields[field].default


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(envvar="BGSERVE_HOST", help="Control API bind address")
    ] = _default("host"),
    port: Annotated[int, typer.Option(envvar="BGSERVE_PORT", help="Control API port")] = _default(
        "port"
    ),
    data_port: Annotated[
        int, typer.Option(envvar="BGSERVE_DATA_PORT", help="Data-plane (router) port")
    ] = _default("data_port"),
    state_url: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL of the state (default: BGSERVE_STATE_URL, else state.db "
            "in BGSERVE_HOME)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the control API and, with the local backend, the data plane.

    Every other setting comes from BGSERVE_* variables (see the README's Settings); the
    MLflow registry is MLFLOW_TRACKING_URI, else mlflow.db in BGSERVE_HOME.
    """
    from functools import partial

    import uvicorn

    from bgserve.api.app import create_app
    from bgserve.api.connections import ConnectionLimits, guarded_protocol
    from bgserve.cli.logs import configure_logging
    from bgserve.compose import build_components
    from bgserve.compose.election import claim_local_state

    given = {"host": host, "port": port, "data_port": data_port, "state_url": state_url}
    settings = load_settings(given)
    configure_logging(settings.log_level)
    try:
        claim = claim_local_state(settings)  # before binding: a second serve says who runs
    except BgserveError as exc:
        say_error(exc.message)
        raise typer.Exit(1) from exc
    control = settings.control
    limits = ConnectionLimits(
        control.header_timeout_seconds, control.max_connections, control.max_header_bytes
    )
    uvicorn.run(
        create_app(settings, build=partial(build_components, claim=claim)),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
        http=guarded_protocol(limits),
        timeout_keep_alive=max(1, round(control.idle_timeout_seconds)),
        proxy_headers=True,
        forwarded_allow_ips=control.trusted_proxies,
    )


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def slot(ctx: typer.Context) -> None:
    """Serve one bundle over Open Inference Protocol v2 (what every backend runs)."""
    from bgserve.slot.server import main as slot_main

    slot_main(list(ctx.args))


@app.command()
def demo(
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the temporary directory and print how to use it")
    ] = False,
    llm: Annotated[
        bool,
        typer.Option(
            "--llm",
            help="The LLM story instead: SmolLM2 with two chat prompts, streamed through "
            "the router with the openai SDK, a plan with the time-to-first-token check",
        ),
    ] = False,
) -> None:
    """Run the whole flow on this machine: register, deploy, stage, promote, revert.

    Exit status 0 when the live client saw no failed request, else 1.
    """
    from bgserve.cli.logs import configure_logging

    # The story is imported before the logging is set: some MLflow modules turn its
    # prints back on when they are first imported (mlflow.types.responses does).
    if llm:
        try:
            from bgserve.demo.llm_story import run_llm_demo as story
        except ImportError as exc:
            typer.echo(
                f"bgserve demo --llm needs the llm extra ({exc.name} is missing): "
                'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install "bgserve[llm]"',
                err=True,
            )
            raise typer.Exit(2) from exc
    else:
        from bgserve.demo.run import run_demo as story

    settings = load_settings({})
    # The story is the output: bgserve's own INFO lines only when asked for.
    explicit = "log_level" in settings.model_fields_set
    configure_logging(settings.log_level if explicit else "warning")
    raise typer.Exit(story(keep=keep))


@app.command()
def quickstart() -> None:
    """Register the demo models and prompts in your MLflow, with `candidate` aliases.

    The registry is MLFLOW_TRACKING_URI, else mlflow.db in BGSERVE_HOME: the one
    `bgserve serve` uses. Registers summarizer v1 and v2 and the summarize prompt v1 and
    v2 (unless there already), and points each one's `candidate` alias at version 2.
    Afterwards the commands of the README's "Using it" work as written.
    """
    from bgserve.cli.logs import configure_logging
    from bgserve.demo.quickstart import run_quickstart

    settings = load_settings({})
    configure_logging(settings.log_level)
    try:
        run_quickstart(settings, console)
    except BgserveError as exc:
        say_error(exc.message)
        raise typer.Exit(1) from exc


@app.command()
@remote_verb
def release(
    name: Annotated[str, typer.Argument(help="Release name (DNS-1123 label)")],
    model_uri: Annotated[
        str, typer.Option("--model-uri", "-m", help="models:/NAME/VERSION or models:/NAME@ALIAS")
    ],
    prompt_uri: Annotated[
        str,
        typer.Option("--prompt-uri", "-p", help="prompts:/NAME/VERSION or prompts:/NAME@ALIAS"),
    ],
    remote: Remote,
) -> None:
    """Register a model version + prompt version as a release (aliases resolved once)."""
    body = {"name": name, "model_uri": model_uri, "prompt_uri": prompt_uri}
    payload = remote.call("POST", "/releases", body)
    remote.show(payload, lambda r: console.print(release_table([r])))


@app.command()
@remote_verb
def releases(remote: Remote) -> None:
    """List releases."""
    remote.show(remote.call("GET", "/releases"), lambda r: console.print(release_table(r)))


@app.command()
@remote_verb
def deploy(
    name: Annotated[str, typer.Argument(help="Deployment name (DNS-1123 label)")],
    release_id: Annotated[int, typer.Option("--release", "-r", help="Release id to run as blue")],
    remote: Remote,
) -> None:
    """Create a deployment with a release as blue at 100%."""
    body = {"name": name, "release_id": release_id}
    remote.show(remote.call("POST", "/deployments", body, name=name), deployment_panel)


@app.command()
@remote_verb
def stage(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    release_id: Annotated[int, typer.Option("--release", "-r", help="Release id to stage")],
    remote: Remote,
) -> None:
    """Stage a release as green at 0%."""
    body = {"release_id": release_id}
    payload = remote.call("POST", f"/deployments/{name}/green", body, name=name)
    remote.show(payload, deployment_panel)


@app.command()
@remote_verb
def promote(
    name: Annotated[str, typer.Argument(help="Deployment name")],
    remote: Remote,
    weight: Annotated[
        int | None, typer.Option(help="One step to this green weight, done at once")
    ] = None,
    steps: Annotated[
        str | None, typer.Option(help="The plan's green weights, e.g. 10,50,100 (settings)")
    ] = None,
    bake: Annotated[
        float | None, typer.Option(help="Seconds each step bakes before analysis (settings)")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Skip a failed or missing comparison (recorded)")
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Submit the plan and return without watching")
    ] = False,
    baseline: Annotated[
        bool,
        typer.Option(
            "--baseline",
            help="Analyse green against a fresh slot of blue's release given green's share",
        ),
    ] = False,
) -> None:
    """Move green one step (--weight), or submit a promotion plan and watch it.

    The rollout engine runs the plan: each step bakes, then green is analysed against
    blue on live traffic; it moves on, holds, or reverts on its own. Exit codes when
    watching: 0 cut over, 3 reverted, 4 held for an operator (promote again to go on).
    Ctrl-C stops watching, not the plan.
    """
    body: dict[str, Any] = {"force": force}
    again = f"bgserve promote {name}"
    if weight is not None:
        body["weight"] = weight
        again += f" --weight {weight}"
    plan = _plan_body(steps, bake)
    if baseline:
        plan["compare_with"] = "baseline"
    if plan:
        body["plan"] = plan
    payload = remote.call("POST", f"/deployments/{name}/promote", body, name=name, again=again)
    if weight is not None or no_wait or remote.as_json:
        remote.show(payload, deployment_panel)
        return
    code = watch(
        lambda: remote.call("GET", f"/deployments/{name}", name=name),
        lambda: _last_action(remote, name),
        console,
    )
    raise typer.Exit(code)


def _plan_body(steps: str | None, bake: float | None) -> dict[str, Any]:
    plan: dict[str, Any] = {}
    if steps is not None:
        try:
            plan["steps"] = [int(s) for s in steps.split(",") if s.strip()]
        except ValueError:
            raise typer.BadParameter("use weights like 10,50,100", param_hint="--steps") from None
    if bake is not None:
        plan["bake_s"] = bake
    return plan


def _last_action(remote: Remote, name: str) -> str | None:
    events = remote.call_all(f"/deployments/{name}/history", name=name)
    return str(events[-1]["action"]) if events else None


@app.command()
@remote_verb
def revert(name: Annotated[str, typer.Argument(help="Deployment name")], remote: Remote) -> None:
    """Send all traffic back to the last good release."""
    remote.show(remote.call("POST", f"/deployments/{name}/revert", {}, name=name), deployment_panel)


@app.command()
@remote_verb
def status(
    remote: Remote,
    name: Annotated[str | None, typer.Argument(help="Deployment name (all when omitted)")] = None,
) -> None:
    """Show deployments: phase, slots, weights, readiness."""
    if name:
        remote.show(remote.call("GET", f"/deployments/{name}", name=name), deployment_panel)
        return
    remote.show(remote.call_all("/deployments"), _deployment_panels)


def _deployment_panels(deployments: list[dict[str, Any]]) -> None:
    if not deployments:
        console.print("no deployments yet: create one with `bgserve deploy NAME --release ID`")
    for deployment in deployments:
        deployment_panel(deployment)


@app.command()
@remote_verb
def history(name: Annotated[str, typer.Argument(help="Deployment name")], remote: Remote) -> None:
    """Show who changed what, when, with weights before and after."""
    payload = remote.call_all(f"/deployments/{name}/history", name=name)
    remote.show(payload, lambda e: console.print(history_table(e)))


app.command()(compare)
app.command()(shadow)
app.add_typer(prompts_app, name="prompts")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.command()(render)
app.command(name="export-bundle")(export_bundle)


def main() -> None:
    """Console-script entry point."""
    app()
