"""The composition root: the one place that builds store, registry, backend and service."""

from __future__ import annotations

import os
from dataclasses import dataclass

from bgserve.app.comparer import Comparer
from bgserve.app.prompt_validation import PromptValidator
from bgserve.app.service import Service
from bgserve.backends.base import Backend
from bgserve.errors import InvalidInput
from bgserve.registry.mlflow_registry import MlflowRegistry
from bgserve.settings import Settings
from bgserve.store import Store


@dataclass
class Components:
    """Everything a running bgserve holds, closed together."""

    settings: Settings
    store: Store
    registry: MlflowRegistry
    backend: Backend
    service: Service
    comparer: Comparer
    validator: PromptValidator

    def close(self) -> None:
        """Stop the backend (and the local slots) and release the database."""
        self.backend.close()
        self.store.close()


def build_backend(settings: Settings) -> Backend:
    """The backend ``settings.backend`` names. Raises InvalidInput for an unknown one."""
    if settings.backend == "local":
        from bgserve.backends.local.backend import LocalBackend

        return LocalBackend(
            settings.data_host,
            settings.data_port,
            settings.slot_ready_timeout_seconds,
            env=_mlflow_env(settings),
            log_dir=settings.home / "slot-logs",
        )
    if settings.backend == "kserve":
        from bgserve.backends.kube.kserve.backend import KServeBackend

        return KServeBackend(settings)
    if settings.backend == "seldon":
        from bgserve.backends.kube.seldon import seldon_backend

        return seldon_backend(settings)
    raise InvalidInput(f"backend {settings.backend!r} is not available yet", field="backend")


def _mlflow_env(settings: Settings) -> dict[str, str]:
    """The MLflow variables slot processes need to load bundles from the same registry."""
    env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    if settings.mlflow_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    if settings.mlflow_registry_uri:
        env["MLFLOW_REGISTRY_URI"] = settings.mlflow_registry_uri
    return env


def build_components(settings: Settings, backend: Backend | None = None) -> Components:
    """Build every part from ``settings``; ``backend`` replaces the configured one."""
    store = Store(settings.resolved_state_url)
    registry = MlflowRegistry(
        tracking_uri=settings.mlflow_tracking_uri,
        registry_uri=settings.mlflow_registry_uri,
        bundle_name_template=settings.bundle_name_template,
    )
    try:
        backend = backend or build_backend(settings)
    except Exception:
        store.close()
        raise
    service = Service(settings, store, registry, backend)
    validator = PromptValidator(service, registry)
    return Components(settings, store, registry, backend, service, Comparer(service), validator)
