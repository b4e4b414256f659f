"""Process-wide MLflow state: HTTP retry bounds, tracking/registry URIs, experiments."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.environment_variables import (
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
    MLFLOW_HTTP_REQUEST_BACKOFF_JITTER,
    MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    MLFLOW_HTTP_REQUEST_TIMEOUT,
)
from mlflow.exceptions import MlflowException

__all__ = ["beside_sqlite", "bound_mlflow_http", "ensure_experiment", "mlflow_uris"]

# MLflow's fluent API reads process-wide URIs; one swap at a time keeps them consistent.
_URI_LOCK = threading.RLock()


def bound_mlflow_http(max_retries: int, timeout: int, backoff_factor: int) -> dict[str, str]:
    """Bound MLflow's HTTP retries and timeout for this process, where the user did not.

    MLflow retries a failed request 7 times with exponential backoff by default, so an
    unreachable server blocks a call for minutes; bgserve answers 503 within seconds
    instead. MLflow's defaults change (the environment is left alone, so a variable set
    there still wins). Returns the variables a child process needs for the same bounds:
    those not set in the environment. Idempotent.
    """
    bounds = {
        MLFLOW_HTTP_REQUEST_MAX_RETRIES: max_retries,
        MLFLOW_HTTP_REQUEST_TIMEOUT: timeout,
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR: backoff_factor,
        MLFLOW_HTTP_REQUEST_BACKOFF_JITTER: 0.2,
    }
    for variable, value in bounds.items():
        variable.default = value
    return {v.name: str(value) for v, value in bounds.items() if not v.is_set()}


@contextmanager
def mlflow_uris(tracking_uri: str | None, registry_uri: str | None) -> Iterator[None]:
    """Point MLflow's process-wide URIs at these stores for the block, then restore them.

    Only for MLflow calls that have no client form (``log_model``); holds a lock meanwhile.
    MLflow's module state is swapped directly: its setters would also write the URIs into
    the environment, which every child process would then inherit.
    """
    tracking_utils: Any = mlflow.tracking._tracking_service.utils
    registry_utils: Any = mlflow.tracking._model_registry.utils
    with _URI_LOCK:
        saved = (tracking_utils._tracking_uri, registry_utils._registry_uri)
        try:
            if tracking_uri:
                tracking_utils._tracking_uri = tracking_uri
            if registry_uri:
                registry_utils._registry_uri = registry_uri
            yield
        finally:
            tracking_utils._tracking_uri, registry_utils._registry_uri = saved


def ensure_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created (or restored) when needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(client.create_experiment(name, artifact_location=artifact_location))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return str(experiment.experiment_id)


def beside_sqlite(tracking_uri: str | None) -> str | None:
    """For a SQLite tracking store, an artifact root beside the database file.

    MLflow's own default is ``./mlruns`` under the working directory of whoever made the
    experiment first, which differs between ``bgserve serve`` and the CLI.
    """
    if not tracking_uri or not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return str(Path(path).resolve().parent / "mlartifacts")
