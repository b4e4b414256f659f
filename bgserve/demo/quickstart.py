"""``bgserve quickstart``: the demo models and prompts in the user's MLflow, aliases set.

After it, the README's "Using it" commands work as written: ``models:/summarizer/1``,
``prompts:/summarize/1`` and the ``candidate`` aliases all exist in the registry that
``bgserve serve`` uses (``MLFLOW_TRACKING_URI``, else ``mlflow.db`` in ``BGSERVE_HOME``).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

from bgserve.compose import build_registry
from bgserve.demo.models import push_demo_prompts, register_demo_models
from bgserve.registry.aliases import set_alias
from bgserve.registry.errors import translate_errors
from bgserve.settings import Settings

MODEL = "summarizer"
PROMPT = "summarize"
ALIAS = "candidate"


@dataclass(frozen=True)
class Quickstart:
    """What quickstart registered, and where."""

    tracking_uri: str
    models: tuple[int, int]
    prompts: tuple[int, int]


def quickstart(settings: Settings) -> Quickstart:
    """Register summarizer v1, v2 and prompt summarize v1, v2 (unless there already) and
    point both ``candidate`` aliases at the second versions. Idempotent.

    Raises:
        InvalidInput: a name is taken by the other kind (a model called summarize, ...).
        RegistryUnavailable: MLflow cannot be reached.
    """
    registry = build_registry(settings)
    uri = settings.resolved_mlflow_tracking_uri
    registry_uri = registry.registry_uri
    models = register_demo_models(uri, registry_uri, MODEL)
    prompts = push_demo_prompts(uri, registry_uri, PROMPT)
    with translate_errors(f"setting the {ALIAS!r} aliases"):
        set_alias(registry.client, "model", MODEL, models[1], ALIAS)
        set_alias(registry.client, "prompt", PROMPT, prompts[1], ALIAS)
    return Quickstart(uri, models, prompts)


def run_quickstart(settings: Settings, console: Console) -> None:
    """Run :func:`quickstart` and say what is where, and what to run next."""
    console.print(f"registering in MLflow at {settings.resolved_mlflow_tracking_uri}", markup=False)
    done = quickstart(settings)
    lines = [
        f"models:/{MODEL}/{done.models[0]} and /{done.models[1]}, "
        f"models:/{MODEL}@{ALIAS} -> {done.models[1]}",
        f"prompts:/{PROMPT}/{done.prompts[0]} and /{done.prompts[1]}, "
        f"prompts:/{PROMPT}@{ALIAS} -> {done.prompts[1]}",
    ]
    for line in lines:
        console.print(f"  {line}", markup=False, highlight=False)
    if settings.mlflow_tracking_uri is None:
        console.print(
            "bgserve serve uses this registry too (MLFLOW_TRACKING_URI is unset); "
            "next: bgserve serve, then the commands of the README's 'Using it'",
            markup=False,
        )
    else:
        console.print("next: bgserve serve (with the same MLFLOW_TRACKING_URI)", markup=False)
