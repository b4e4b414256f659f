"""The backend ``settings.backend`` names, and where the rollout engine reads traffic."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from bgserve.app.ports import TrafficSource
from bgserve.app.traffic_reuse import ReadEvery
from bgserve.backends.base import Backend
from bgserve.errors import InvalidInput
from bgserve.settings import Settings

if TYPE_CHECKING:
    from bgserve.domain.release import Release
    from bgserve.kube.kserve.llm_objects import LlmServing
    from bgserve.kube.objects import SlotMlflow
    from bgserve.registry.mlflow_registry import MlflowRegistry


def build_backend(
    settings: Settings,
    mlflow_http: Mapping[str, str] | None = None,
    registry: MlflowRegistry | None = None,
) -> Backend:
    """The backend ``settings.backend`` names; ``mlflow_http`` are the MLflow HTTP bounds
    local slot processes get (see :func:`bgserve.registry.session.bound_mlflow_http`);
    ``registry`` tells the KServe backend which releases pin an LLM.
    Raises InvalidInput for an unknown backend, BackendError for a Kubernetes backend
    without a Kubernetes configuration."""
    if settings.backend == "local":
        from bgserve.backends.local.backend import LocalBackend

        return LocalBackend(
            settings.data_host,
            settings.data_port,
            settings.slot_ready_timeout_seconds,
            env=slot_env(settings, mlflow_http or {}),
            log_dir=settings.home / "slot-logs",
            connect_timeout=settings.upstream_connect_timeout_seconds,
            first_byte_timeout=settings.upstream_first_byte_timeout_seconds,
            upstream_timeout=settings.upstream_timeout_seconds,
            stream_idle_timeout=settings.upstream_stream_idle_timeout_seconds,
            deployment_timeouts=settings.deployment_timeouts,
            outlier_failures=settings.outlier_consecutive_failures,
            data_token=settings.data_token or None,
            sticky_header=settings.sticky_header,
            shadow_green_nice=settings.shadow.green_nice,
            shadow_max_bytes=settings.shadow.max_bytes,
        )
    if settings.backend == "kserve":
        from bgserve.kube.kserve.backend import KServeBackend

        return KServeBackend(
            settings.kube,
            ready_timeout=settings.slot_ready_timeout_seconds,
            mlflow=slot_mlflow(settings),
            llms=llm_lookup(registry) if registry is not None else None,
        )
    if settings.backend == "seldon":
        from bgserve.kube.seldon import seldon_backend

        return seldon_backend(
            settings.kube,
            ready_timeout=settings.slot_ready_timeout_seconds,
            mlflow=slot_mlflow(settings),
        )
    if settings.backend == "sagemaker":
        return sagemaker_backend(settings)
    if settings.backend == "azureml":
        return azureml_backend(settings)
    if settings.backend == "databricks":
        return databricks_backend(settings)
    if settings.backend == "vertex":
        return vertex_backend(settings)
    if settings.backend == "memory":
        from bgserve.backends.memory import MemoryBackend

        return MemoryBackend()
    raise InvalidInput(f"backend {settings.backend!r} is not available yet", field="backend")


def sagemaker_backend(settings: Settings, session: object = None) -> Backend:
    """The SageMaker backend of ``settings`` (``session``: a boto3 session to use instead
    of one in the settings' region). Raises BackendError without boto3, a role or an
    image."""
    from bgserve.cloud.sagemaker.backend import SageMakerBackend

    return SageMakerBackend(
        settings.sagemaker,
        ready_timeout=settings.slot_ready_timeout_seconds,
        slot_env=cloud_slot_env(settings),
        session=session,
    )


def azureml_backend(settings: Settings, client: object = None) -> Backend:
    """The Azure ML backend of ``settings`` (``client``: an MLClient to use instead of one
    of the settings' workspace with azure-identity's credential). Raises BackendError
    without the SDK, a workspace or an image."""
    from bgserve.cloud.azureml.backend import AzureMLBackend

    return AzureMLBackend(
        settings.azureml,
        ready_timeout=settings.slot_ready_timeout_seconds,
        slot_env=cloud_slot_env(settings),
        client=client,
    )


def databricks_backend(settings: Settings, client: object = None) -> Backend:
    """The Databricks backend of ``settings`` (``client``: a WorkspaceClient to use instead
    of one of the settings' workspace with the SDK's unified authentication). Raises
    BackendError without the SDK or a workspace."""
    from bgserve.cloud.databricks.backend import DatabricksBackend

    return DatabricksBackend(
        settings.databricks, ready_timeout=settings.slot_ready_timeout_seconds, client=client
    )


def vertex_backend(settings: Settings, clients: object = None) -> Backend:
    """The Vertex AI backend of ``settings`` (``clients``: the GAPIC clients to use instead
    of ones of the settings' region with Application Default Credentials). Raises
    BackendError without the SDK, a project, a location or an image."""
    from bgserve.cloud.vertex.backend import VertexBackend
    from bgserve.cloud.vertex.google import VertexClients

    return VertexBackend(
        settings.vertex,
        ready_timeout=settings.slot_ready_timeout_seconds,
        slot_env=cloud_slot_env(settings),
        clients=clients if isinstance(clients, VertexClients) else None,
    )


def cloud_slot_env(settings: Settings) -> dict[str, str]:
    """The MLflow stores a cloud slot (SageMaker, Azure ML) loads its bundle from, as
    configured."""
    mlflow = slot_mlflow(settings)
    env = {"MLFLOW_TRACKING_URI": mlflow.tracking_uri, "MLFLOW_REGISTRY_URI": mlflow.registry_uri}
    return {k: v for k, v in env.items() if v}


def llm_lookup(registry: MlflowRegistry) -> Callable[[Release], LlmServing | None]:
    """The KServe backend's view of a release's base model, read from ``registry`` once per
    model version (versions never change)."""
    from bgserve.kube.kserve.llm_objects import LlmServing
    from bgserve.registry.llm_models import read_llm

    @functools.cache
    def serving(name: str, version: int) -> LlmServing | None:
        base = read_llm(registry, name, version)
        if base is None:
            return None
        if base.kind == "gguf":
            return LlmServing("gguf", served_model_name=name, weights_uri=base.weights_uri)
        return LlmServing(
            "openai",
            served_model_name=base.openai_model or name,
            openai_url=base.openai_url,
            api_key_env=base.api_key_env,
            api_key_secret=base.api_key_secret,
        )

    return lambda release: serving(release.model_name, release.model_version)


def slot_mlflow(settings: Settings) -> SlotMlflow:
    """The MLflow stores a Kubernetes slot loads its bundle from (as configured, unresolved:
    a pod cannot reach this machine's SQLite file)."""
    from bgserve.kube.objects import SlotMlflow

    return SlotMlflow(settings.mlflow_tracking_uri, settings.mlflow_registry_uri)


# Read by the LLM model code in the slot (bgserve/llm/llm_model.py, self-contained).
LLM_THREADS_ENV = "BGSERVE_LLM_THREADS"


def slot_env(settings: Settings, mlflow_http: Mapping[str, str]) -> dict[str, str]:
    """The variables local slot processes need: the same MLflow registry, HTTP bounds and
    log level (MLflow variables the user set win), and llama.cpp's thread count."""
    env = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    if settings.llm_threads:
        env[LLM_THREADS_ENV] = str(settings.llm_threads)
    env["MLFLOW_TRACKING_URI"] = settings.resolved_mlflow_tracking_uri
    if settings.mlflow_registry_uri:
        env["MLFLOW_REGISTRY_URI"] = settings.mlflow_registry_uri
    env.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if settings.log_level == "debug" else "WARNING")
    for key, value in mlflow_http.items():
        env.setdefault(key, value)
    return env


def build_traffic_source(settings: Settings, backend: Backend) -> TrafficSource | None:
    """Where the rollout engine reads live traffic: the backend's own counts if it keeps
    them (the local data plane, the memory backend), CloudWatch for SageMaker, the
    endpoint's metrics export for Databricks, Cloud Monitoring for Vertex AI, Azure Monitor
    for Azure ML, else Prometheus when configured. Raises BackendError when Vertex AI's
    Cloud Monitoring client or Azure Monitor's metrics client cannot be made."""
    if isinstance(backend, TrafficSource):
        return backend
    if settings.backend == "sagemaker":
        from bgserve.cloud.sagemaker.backend import SageMakerBackend
        from bgserve.cloud.sagemaker.metrics import CloudWatchTraffic

        if isinstance(backend, SageMakerBackend):
            cloudwatch = CloudWatchTraffic(backend.cloudwatch(), backend.variant_names)
            return ReadEvery(cloudwatch, settings.sagemaker.cloudwatch_read_seconds)
    if settings.backend == "databricks":
        from bgserve.cloud.databricks.backend import DatabricksBackend
        from bgserve.cloud.databricks.metrics import MetricsExportTraffic
        from bgserve.cloud.databricks.names import endpoint_name

        if isinstance(backend, DatabricksBackend):
            prefix = settings.databricks.name_prefix
            export = MetricsExportTraffic(backend.client, lambda d: endpoint_name(prefix, d))
            return ReadEvery(export, settings.databricks.metrics_read_seconds)
    if settings.backend == "vertex":
        return vertex_traffic(settings, backend)
    if settings.backend == "azureml":
        return azureml_traffic(settings, backend)
    if settings.kube.prometheus.url and settings.backend in ("kserve", "seldon"):
        from bgserve.kube.prometheus import PrometheusTraffic

        prometheus = PrometheusTraffic(settings.kube, settings.backend)
        return ReadEvery(prometheus, settings.kube.prometheus.read_seconds)
    return None


def vertex_traffic(settings: Settings, backend: Backend) -> TrafficSource | None:
    """Cloud Monitoring's counts of the Vertex AI backend's deployed models, read at most
    every ``BGSERVE_VERTEX_METRICS_READ_SECONDS``; None for another backend. Raises
    BackendError without google-cloud-monitoring or credentials."""
    from bgserve.cloud.vertex.backend import VertexBackend
    from bgserve.cloud.vertex.metrics import MonitoringTraffic

    if not isinstance(backend, VertexBackend):
        return None
    vx = settings.vertex
    source = MonitoringTraffic(
        backend.monitoring(), vx.project, vx.location, backend.deployed_releases
    )
    return ReadEvery(source, vx.metrics_read_seconds)


def azureml_traffic(settings: Settings, backend: Backend) -> TrafficSource | None:
    """Azure Monitor's request counts of the Azure ML backend's deployments, read at most
    every ``BGSERVE_AZUREML_METRICS_READ_SECONDS``; None for another backend. Raises
    BackendError without azure-monitor-query."""
    from bgserve.cloud.azureml.backend import AzureMLBackend
    from bgserve.cloud.azureml.metrics import MonitorTraffic

    if not isinstance(backend, AzureMLBackend):
        return None
    source = MonitorTraffic(backend.monitor(), backend.endpoint_id)
    return ReadEvery(source, settings.azureml.metrics_read_seconds)
