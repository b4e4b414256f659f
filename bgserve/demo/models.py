"""Register the demo summarizer (two versions, and a flaky third) and the demo prompt (two
versions) in MLflow.

Both functions are idempotent: run twice, they find what the first run registered.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import yaml
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema

from bgserve.compose import registry_at
from bgserve.errors import InvalidInput
from bgserve.registry.mlflow_registry import MlflowRegistry, ensure_experiment, translate_errors

DEMO_EXPERIMENT = "bgserve-demo"
MODEL_CODE = Path(__file__).with_name("text_model.py")
VARIANT_TAG = "bgserve.demo.variant"
# Version 2 cuts first sentences shorter: same answers on short texts, new ones on long.
VARIANTS: tuple[tuple[str, int], ...] = (("v1", 12), ("v2", 8))
# Version 3 answers as version 1 but fails on texts over 200 characters: a bug no golden
# case reaches (the longest is 164), which live traffic finds.
FLAKY_VARIANT = ("v3-flaky", 12, 200)
V1_WORDING = "Summarize the text below"
V2_WORDING = "Summarize the following text"


def prompt_dir(name: str = "summarize") -> Traversable:
    """The packaged directory of demo prompt ``name`` (template.txt, prompt.yaml, golden.jsonl)."""
    return resources.files("bgserve.demo").joinpath("prompts", name)


def demo_templates() -> tuple[str, str]:
    """The demo prompt's two versions: the packaged template, and the same reworded."""
    v1 = prompt_dir().joinpath("template.txt").read_text(encoding="utf-8")
    v2 = v1.replace(V1_WORDING, V2_WORDING, 1)
    return v1, v2 if v2 != v1 else f"Please read carefully. {v1}"


def _signature() -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string, "prompt")]),
        outputs=Schema([ColSpec(DataType.string, "output")]),
    )


def _existing_variants(client: Any, model_name: str) -> dict[str, int]:
    found: dict[str, int] = {}
    for version in client.search_model_versions(f"name='{model_name}'"):
        variant = version.tags.get(VARIANT_TAG)
        if variant and variant not in found:
            found[variant] = int(version.version)
    return found


def _log_variant(
    registry: MlflowRegistry, model_name: str, variant: str, config: dict[str, int]
) -> int:
    experiment_id = ensure_experiment(registry.client, DEMO_EXPERIMENT, registry.artifact_location)
    with registry.uris():
        nested = mlflow.active_run() is not None
        run_name = f"{model_name}-{variant}"
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, nested=nested):
            info = mlflow.pyfunc.log_model(
                name="summarizer",
                python_model=str(MODEL_CODE),
                model_config=config,
                signature=_signature(),
                # Saved with the model, and checked by MLflow against it at logging time.
                input_example=pd.DataFrame({"prompt": ["Text: An example. It has two sentences."]}),
                pip_requirements=[f"mlflow=={mlflow.__version__}", "pandas"],
                registered_model_name=model_name,
                tags={VARIANT_TAG: variant},
            )
    return int(info.registered_model_version)


def register_demo_models(
    tracking_uri: str | None,
    registry_uri: str | None = None,
    model_name: str = "summarizer",
    artifact_location: str | None = None,
) -> tuple[int, int]:
    """Register summarizer versions 1 and 2 (unless already there); return their versions.

    Raises:
        InvalidInput: ``model_name`` is taken by a prompt.
        RegistryUnavailable: MLflow cannot be reached.
    """
    registry = registry_at(tracking_uri, registry_uri, artifact_location=artifact_location)
    with translate_errors(f"registering the demo model {model_name!r}"):
        existing = _existing_variants(registry.client, model_name)
        versions = [
            existing.get(variant)
            or _log_variant(registry, model_name, variant, {"max_words": max_words})
            for variant, max_words in VARIANTS
        ]
    return versions[0], versions[1]


def register_flaky_model(
    tracking_uri: str | None,
    registry_uri: str | None = None,
    model_name: str = "summarizer",
    artifact_location: str | None = None,
) -> int:
    """Register the flaky summarizer (unless already there); return its version.

    It answers exactly as version 1 but raises on texts over 200 characters, so it passes
    the demo golden set and fails about one live request in five of the demo's traffic.
    Raises RegistryUnavailable.
    """
    variant, max_words, max_chars = FLAKY_VARIANT
    config = {"max_words": max_words, "max_chars": max_chars}
    return register_variant(
        tracking_uri, registry_uri, variant, config, model_name, artifact_location
    )


def register_variant(
    tracking_uri: str | None,
    registry_uri: str | None,
    variant: str,
    config: dict[str, int],
    model_name: str = "summarizer",
    artifact_location: str | None = None,
) -> int:
    """Register a summarizer variant tagged ``variant`` with model ``config`` (``max_words``,
    ``max_chars``, ``delay_ms``), unless one is there; return its version.
    Raises RegistryUnavailable."""
    registry = registry_at(tracking_uri, registry_uri, artifact_location=artifact_location)
    with translate_errors(f"registering the demo model variant {variant!r}"):
        existing = _existing_variants(registry.client, model_name).get(variant)
        return existing or _log_variant(registry, model_name, variant, config)


def _prompt_metadata() -> tuple[str | None, dict[str, str]]:
    meta = yaml.safe_load(prompt_dir().joinpath("prompt.yaml").read_text(encoding="utf-8")) or {}
    if not isinstance(meta, dict):
        raise InvalidInput("prompts/summarize/prompt.yaml must be a mapping")
    tags = {str(key): str(value) for key, value in (meta.get("tags") or {}).items()}
    return meta.get("commit_message"), tags


def _find_prompt_version(registry: MlflowRegistry, name: str, template: str) -> int | None:
    if registry.client.get_prompt(name) is None:
        return None
    for version in registry.client.search_prompt_versions(name):
        if version.template == template:
            return int(version.version)
    return None


def push_demo_prompts(
    tracking_uri: str | None,
    registry_uri: str | None = None,
    prompt_name: str = "summarize",
) -> tuple[int, int]:
    """Register the demo prompt's two versions (unless already there); return their versions.

    Raises:
        InvalidInput: ``prompt_name`` is taken by a model.
        RegistryUnavailable: MLflow cannot be reached.
    """
    registry = registry_at(tracking_uri, registry_uri)
    message, tags = _prompt_metadata()
    versions: list[int] = []
    messages = (message, "Reword the instruction")
    for template, commit_message in zip(demo_templates(), messages, strict=True):
        with translate_errors(f"pushing the demo prompt {prompt_name!r}"):
            found = _find_prompt_version(registry, prompt_name, template)
        if found is None:
            found, _ = registry.push_prompt(prompt_name, template, commit_message, tags)
        versions.append(found)
    return versions[0], versions[1]
