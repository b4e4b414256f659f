"""``bgserve export-bundle``: a release bundle as a folder to put in model storage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bgserve.cli.client import console, load_settings, say_error
from bgserve.errors import BgserveError


def export_bundle(
    bundle_uri: Annotated[
        str, typer.Argument(help="The release's bundle_uri, e.g. models:/bgserve.chat-v2/3")
    ],
    dest: Annotated[Path, typer.Argument(help="New or empty folder to write the bundle into")],
) -> None:
    """Write a release's bundle as a folder Seldon Core 2's agent can load.

    The folder holds the bundle's MLflow model (the base model inside it) and a
    model-settings.json beside its MLmodel. Copy it to the storage a Model's storageUri
    names, e.g. `aws s3 cp --recursive DEST s3://bucket/bgserve/BUNDLE/VERSION/`. The
    bundle_uri is in `bgserve releases` (GET /releases). The registry is
    MLFLOW_TRACKING_URI, else mlflow.db in BGSERVE_HOME. Exit 1 on an unknown bundle
    version, a malformed URI or a folder that holds files (nothing is overwritten).
    """
    from bgserve.compose import build_registry
    from bgserve.registry.export import export_bundle as export

    settings = load_settings({})
    try:
        written = export(build_registry(settings), bundle_uri, dest)
    except BgserveError as exc:
        say_error(exc.message)
        raise typer.Exit(1) from exc
    console.print(f"exported {bundle_uri} to {written}")
