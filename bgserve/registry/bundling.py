"""Log and register a release bundle: its code, experiment, signature and requirements."""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema

from bgserve.domain.release import RegistryRef
from bgserve.registry.session import ensure_experiment

__all__ = [
    "BUNDLE_CODE",
    "BUNDLE_EXPERIMENT",
    "bundle_requirements",
    "bundle_signature",
    "log_bundle",
]

BUNDLE_CODE = Path(__file__).with_name("bundle_model.py")
BUNDLE_EXPERIMENT = "bgserve-bundles"


def bundle_signature(columns: list[str]) -> ModelSignature:
    """String inputs named ``columns``, one string output."""
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, column) for column in columns]),
        outputs=Schema([ColSpec(DataType.string, "output")]),
    )


def bundle_requirements(model_uri: str) -> list[str]:
    """The base model's pip requirements plus what the bundle code itself imports.

    Given explicitly, so MLflow does not load the bundle in a subprocess to infer them.
    """
    path = Path(mlflow.pyfunc.get_model_dependencies(model_uri))
    lines = [line.strip() for line in path.read_text().splitlines()]
    reqs = [line for line in lines if line and not line.startswith(("#", "-"))]
    for package, pin in (("mlflow", f"mlflow=={mlflow.__version__}"), ("pandas", "pandas")):
        if not any(req.lower().startswith(package) for req in reqs):
            reqs.append(pin)
    return reqs


def log_bundle(
    client: Any,
    uris: AbstractContextManager[Any],
    artifact_location: str | None,
    bundle: str,
    model: RegistryRef,
    prompt: RegistryRef,
    prompt_config: dict[str, Any],
    columns: list[str],
    tags: dict[str, str],
) -> int:
    """Log the bundle of pinned ``model`` and ``prompt`` and register it as ``bundle``.

    ``prompt_config`` is the prompt's part of the bundle's model_config
    (:meth:`bgserve.evaluation.prompt_spec.PromptSpec.bundle_config`).

    ``uris`` is entered around the fluent MLflow calls (see
    :func:`bgserve.registry.session.mlflow_uris`). Returns the new bundle version.
    MLflow errors are not translated here.
    """
    experiment_id = ensure_experiment(client, BUNDLE_EXPERIMENT, artifact_location)
    with uris:
        requirements = bundle_requirements(model.uri)
        nested = mlflow.active_run() is not None
        with (
            mlflow.start_run(experiment_id=experiment_id, run_name=bundle, nested=nested),
            warnings.catch_warnings(),
        ):
            # MLflow asks for an input example, but checking one would load and run the
            # base model in this process; the signature above is exact, so skip its nag.
            warnings.filterwarnings("ignore", message=".*input example was not provided")
            info = mlflow.pyfunc.log_model(
                name="bundle",
                python_model=str(BUNDLE_CODE),
                artifacts={"base_model": model.uri},
                model_config={**prompt_config, "variables": columns},
                signature=bundle_signature(columns),
                pip_requirements=requirements,
                prompts=[prompt.uri],
                registered_model_name=bundle,
                tags=tags,
            )
    return int(info.registered_model_version)
