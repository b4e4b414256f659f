"""The ``bgserve`` command: the verbs that run here (serve, slot, demo, quickstart), and
the registration of those that call a running server (:mod:`bgserve.cli.rollout` and
the other modules of this package)."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer

from bgserve.cli.bundles import export_bundle
from bgserve.cli.client import (
    console,
    load_settings,
    say_error,
)
from bgserve.cli.db import db_app
from bgserve.cli.follow import follow
from bgserve.cli.manifests import render
from bgserve.cli.models import models_app
from bgserve.cli.prompts import compare, prompts_app
from bgserve.cli.rollout import (
    deploy,
    history,
    promote,
    release,
    releases,
    revert,
    stage,
    status,
)
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
    MLflow registry is MLFLOW_TRACKING_URI, else mlflow.db in BGSERVE_HOME. On SageMaker,
    which starts a model's image as ``serve``, the model's environment
    (BGSERVE_SLOT_MODEL_URI, ...) makes this the release's slot on port 8080 instead.
    """
    from bgserve.slot.sagemaker import slot_argv

    if (argv := slot_argv(os.environ)) is not None:
        from bgserve.slot.server import main as slot_main

        slot_main(argv)
        return
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


for verb in (release, releases, deploy, stage, promote, revert, status, history):
    app.command()(verb)
app.command()(compare)
app.command()(shadow)
app.command()(follow)
app.add_typer(prompts_app, name="prompts")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.command()(render)
app.command(name="export-bundle")(export_bundle)


def main() -> None:
    """Console-script entry point."""
    app()
