"""CLI verbs for base models: ``bgserve models register-llm``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bgserve.cli.client import load_settings, say_error
from bgserve.errors import BgserveError

models_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,
    help="Base models in MLflow: register an LLM that releases can pin.",
)


@models_app.command("register-llm")
def register_llm(
    name: Annotated[str, typer.Argument(help="MLflow registered model name")],
    gguf: Annotated[
        Path | None, typer.Option("--gguf", help="A GGUF file, run by llama.cpp in the slot")
    ] = None,
    openai_url: Annotated[
        str | None,
        typer.Option("--openai-url", help="OpenAI base URL of an endpoint, e.g. http://h:8000/v1"),
    ] = None,
    openai_model: Annotated[
        str | None, typer.Option("--openai-model", help="The model name the endpoint serves")
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            "--api-key-env", help="NAME of the environment variable holding the endpoint's key"
        ),
    ] = None,
    api_key_secret: Annotated[
        str | None,
        typer.Option(
            "--api-key-secret",
            metavar="SECRET/KEY",
            help="On Kubernetes, the Secret key that fills --api-key-env in the slot (needs "
            "--api-key-env); the local backend cannot read Secrets and reads the variable",
        ),
    ] = None,
    gguf_uri: Annotated[
        str | None,
        typer.Option(
            "--gguf-uri",
            help="A GGUF file's s3://, gs://, hf:// or pvc:// URI, fetched by a Kubernetes "
            "slot's storage initializer (nothing is copied; the local backend refuses it)",
        ),
    ] = None,
) -> None:
    """Register an LLM as a new MLflow model version; prints models:/NAME/VERSION.

    Give --gguf PATH, --gguf-uri URI (Kubernetes), or --openai-url URL with --openai-model
    ID. The registry is MLFLOW_TRACKING_URI, else mlflow.db in BGSERVE_HOME. A key is never
    stored: only the name of the variable that holds it, and of the Secret key that fills
    it on Kubernetes.
    """
    from bgserve.cli.logs import configure_logging
    from bgserve.compose import build_registry
    from bgserve.llm.references import parse_secret_ref
    from bgserve.registry.llm_models import LlmSpec
    from bgserve.registry.llm_models import register_llm as register

    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        secret = None if api_key_secret is None else parse_secret_ref(api_key_secret)
        spec = LlmSpec(name, gguf, openai_url, openai_model, api_key_env, secret, gguf_uri)
        done = register(build_registry(settings), spec.checked())
    except BgserveError as exc:
        say_error(exc.message)
        raise typer.Exit(1) from exc
    typer.echo(done.model_uri)
