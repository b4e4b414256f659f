"""A release bundle as a plain folder, for platforms that load models from storage.

Seldon Core 2's agent copies a Model's ``storageUri`` into its model folder and rewrites the
``model-settings.json`` it finds there; for a requirement it does not know (``bgserve``) it
cannot write one itself and fails the load. The exported folder is the bundle's MLflow model
(self-contained: the base model is inside it) with that file beside its ``MLmodel``.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow

from bgserve.domain.release import parse_uri
from bgserve.errors import InvalidInput
from bgserve.registry.errors import translate_errors
from bgserve.registry.mlflow_registry import MlflowRegistry

MODEL_SETTINGS = "model-settings.json"


def export_bundle(registry: MlflowRegistry, bundle_uri: str, dest: Path) -> Path:
    """Write the bundle ``bundle_uri`` (``models:/<bundle>/<version>`` or ``@alias``, as
    ``GET /releases`` gives it) into ``dest`` (created; must be empty).

    Returns ``dest``. Raises InvalidInput (a malformed URI; ``dest`` holds files, is not a
    folder, is a symbolic link or cannot be made), NotFound (no such bundle or version),
    RegistryUnavailable.
    """
    ref = parse_uri(bundle_uri, "models", "bundle_uri")
    bundle, version = ref.name, ref.version or registry.resolve_model(ref)
    _require_empty(dest)
    with registry.uris(), translate_errors(f"exporting models:/{bundle}/{version}"):
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{bundle}/{version}", dst_path=str(dest)
        )
    settings = {
        "name": bundle,
        "implementation": "bgserve",
        "parameters": {"version": str(version)},
    }
    (dest / MODEL_SETTINGS).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return dest


def _require_empty(dest: Path) -> None:
    # A link (dangling or not) would have the export written wherever it points.
    if dest.is_symlink():
        raise InvalidInput(
            f"{dest} is a symbolic link: give a real new or empty folder (nothing is "
            "written through a link)",
            field="dest",
        )
    if dest.exists() and not dest.is_dir():
        raise InvalidInput(f"{dest} is a file: give a folder to export into", field="dest")
    if dest.is_dir() and any(dest.iterdir()):
        raise InvalidInput(
            f"{dest} is not empty: give a new or empty folder (nothing is overwritten)",
            field="dest",
        )
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(f"cannot create {dest}: {exc.strerror or exc}", field="dest") from exc
