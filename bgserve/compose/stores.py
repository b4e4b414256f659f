"""The state database and the MLflow registry, from settings."""

from __future__ import annotations

from pathlib import Path

from bgserve.registry.mlflow_registry import MlflowRegistry
from bgserve.settings import Settings
from bgserve.store import Store


def build_store(settings: Settings) -> Store:
    """The state database ``settings`` names (for entry points that need only the store)."""
    return Store(settings.resolved_state_url)


def build_registry(settings: Settings) -> MlflowRegistry:
    """The MLflow registry ``settings`` names: ``MLFLOW_TRACKING_URI``, else the SQLite
    file ``mlflow.db`` in ``home``, so every entry point sees the same registry."""
    return registry_at(
        settings.resolved_mlflow_tracking_uri,
        settings.mlflow_registry_uri,
        bundle_name_template=settings.bundle_name_template,
    )


def registry_at(
    tracking_uri: str | None,
    registry_uri: str | None = None,
    *,
    bundle_name_template: str = "bgserve.{release}",
    artifact_location: str | None = None,
) -> MlflowRegistry:
    """A registry on explicit MLflow URIs; a SQLite file's directory is created first."""
    uri = tracking_uri or ""
    sqlite_file = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if uri.startswith("sqlite:///") and sqlite_file not in ("", ":memory:"):
        Path(sqlite_file).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return MlflowRegistry(
        tracking_uri=tracking_uri,
        registry_uri=registry_uri,
        bundle_name_template=bundle_name_template,
        artifact_location=artifact_location,
    )
