"""One harness per backend for the contract suite: the backend, releases it can serve,
and the two things the Protocol does not expose — the weights in place and a way to
make a slot go down on its own."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgserve.backends.base import Backend
from bgserve.backends.memory import MemoryBackend
from bgserve.domain.release import Release
from bgserve.kube.kserve.backend import required_rbac as kserve_rbac
from bgserve.kube.kserve.objects import route_name
from bgserve.kube.seldon.base import required_rbac as seldon_rbac
from bgserve.settings import Settings
from tests.support.kube import (
    RELEASES,
    Cluster,
    PlatformStatus,
    kserve_backend,
    seldon_backend_of,
)
from tests.support.kube_gateway import GatewayStatus
from tests.support.kube_namespace import KubeNamespace, Rules
from tests.support.kube_real_apiserver import KubeCluster
from tests.support.models import local_release, wait_until

DEPLOYMENT = "chat"
KINDS = (
    "memory",
    "local",
    "kserve",
    "seldon-v2",
    "seldon-v1",
    "sagemaker",
    "azureml",
    "databricks",
    "vertex",
)


@dataclass
class Harness:
    """A backend under test and what the contract tests need around it."""

    kind: str
    backend: Backend
    release: Callable[[int], Release]
    weights: Callable[[str], dict[int, int]]
    take_down: Callable[[str, int], None]

    def routed(self, deployment: str = DEPLOYMENT) -> dict[int, int]:
        """The weights in place, without zero entries (backends differ in keeping them)."""
        return {r: w for r, w in self.weights(deployment).items() if w}


# ----- memory -----


def memory_harness() -> Iterator[Harness]:
    backend = MemoryBackend()
    yield Harness("memory", backend, RELEASES.__getitem__, backend.weights, backend.kill)
    backend.close()


# ----- local: real slot processes behind the router -----


def local_harness(tmp_path: Path, bundles: Mapping[int, str]) -> Iterator[Harness]:
    from bgserve.backends.local.backend import LocalBackend

    backend = LocalBackend("127.0.0.1", 0, ready_timeout=90, log_dir=tmp_path / "slots")

    def weights(deployment: str) -> dict[int, int]:
        return {t.release_id: t.weight for t in backend.router.routes(deployment)}

    def take_down(deployment: str, release_id: int) -> None:
        pid = backend.slot_pid(deployment, release_id)
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)

        def down() -> bool:
            info = backend.slot_info(deployment, release_id)
            return info is None or not info.ready

        wait_until(down, 30, "the slot to go down")

    def release(release_id: int) -> Release:
        return local_release(release_id, bundles[release_id])

    try:
        yield Harness("local", backend, release, weights, take_down)
    finally:
        backend.close()


# ----- Kubernetes: a real API server and a status-only platform -----


def _kube_settings(ns: KubeNamespace, rules: Rules, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "slot_ready_timeout_seconds": 10,
        "kube_route_hostname": "{deployment}.models.example.com",
        "kube_bundle_storage_uri": "s3://bundles/{bundle_name}/{bundle_version}",
    }
    return ns.settings(rules, **{**values, **extra})


def _route_weights(server: Cluster, deployment: str) -> dict[int, int]:
    for route in server.objects("httproutes"):
        if route["metadata"]["name"] == route_name(deployment):
            refs = route["spec"]["rules"][0]["backendRefs"]
            return {_release_of(r["name"].removesuffix("-predictor")): r["weight"] for r in refs}
    return {}


def _experiment_weights(server: Cluster, deployment: str) -> dict[int, int]:
    for exp in server.objects("experiments"):
        if exp["metadata"]["name"] == deployment:
            return {_release_of(c["name"]): c["weight"] for c in exp["spec"]["candidates"]}
    return {}


def _sdep_weights(server: Cluster, deployment: str) -> dict[int, int]:
    for sdep in server.objects("seldondeployments"):
        if sdep["metadata"]["name"] == deployment:
            return {_release_of(p["name"]): p["traffic"] for p in sdep["spec"]["predictors"]}
    return {}


def _release_of(name: str) -> int:
    """``chat-r2`` and ``r2`` -> 2."""
    return int(name.rsplit("r", 1)[1])


Reader = Callable[[Cluster, str], dict[int, int]]
Build = Callable[..., Backend]
KUBE: dict[str, tuple[str, Build, Rules, Reader, dict[str, Any]]] = {
    "kserve": ("kserve", kserve_backend, kserve_rbac("gateway"), _route_weights, {}),
    "seldon-v2": (
        "seldon",
        seldon_backend_of,
        seldon_rbac("v2"),
        _experiment_weights,
        {"seldon_flavour": "v2"},
    ),
    "seldon-v1": (
        "seldon", seldon_backend_of, seldon_rbac("v1"), _sdep_weights, {"seldon_flavour": "v1"}
    ),
}  # fmt: skip


def kube_harness(kind: str, cluster: KubeCluster) -> Iterator[Harness]:
    """The backend on a fresh namespace of the real API server, as user bgserve with its
    declared Role; a status-only platform answers for the slots."""
    platform, build, rules, read, extra = KUBE[kind]
    ns = KubeNamespace(cluster)
    with ExitStack() as stack:
        stack.callback(ns.close)
        status = PlatformStatus(ns, platform)
        controller = stack.enter_context(status.controller)
        gateway = GatewayStatus(ns)
        stack.enter_context(gateway.controller)
        if platform == "kserve":  # bgserve waits for the gateway to take each route
            extra = {**extra, "kube_route_accept_timeout_seconds": 10}
        settings = _kube_settings(ns, rules, **extra)
        backend: Backend = build(settings, api=ns.api_for(settings))
        stack.callback(backend.close)
        yield Harness(kind, backend, RELEASES.__getitem__, lambda d: read(ns, d), status.take_down)
        assert controller.errors == [] and gateway.controller.errors == []


# ----- SageMaker: the real SDK against moto's SageMaker and the stand-in's additions -----


def sagemaker_harness() -> Iterator[Harness]:
    """The backend through boto3 on the stand-in (tests/support/sagemaker.py), whose
    endpoints update in 50 ms."""
    from bgserve.cloud.sagemaker.names import endpoint_name, release_of_variant, variant_name
    from bgserve.compose.backends import sagemaker_backend
    from tests.support.sagemaker import SageMakerStandIn

    with SageMakerStandIn(update_seconds=0.05) as stand_in:
        settings = Settings(**stand_in.settings(slot_ready_timeout_seconds=10))
        prefix = settings.sagemaker.name_prefix
        backend = sagemaker_backend(settings, session=stand_in.session())

        def weights(deployment: str) -> dict[int, int]:
            raw = stand_in.weights(endpoint_name(prefix, deployment))
            total = sum(raw.values())
            return {
                release: round(w * 100 / total) if total else 0
                for name, w in raw.items()
                if (release := release_of_variant(name)) is not None
            }

        def take_down(deployment: str, release_id: int) -> None:
            stand_in.take_down(endpoint_name(prefix, deployment), variant_name(release_id))

        try:
            yield Harness("sagemaker", backend, RELEASES.__getitem__, weights, take_down)
        finally:
            backend.close()


# ----- Azure ML: the real SDK on the ARM stand-in's transport -----


def azureml_harness() -> Iterator[Harness]:
    """The backend through azure-ai-ml on the stand-in (tests/support/azureml.py), whose
    operations complete in 50 ms."""
    from bgserve.cloud.azureml.deployments import routed
    from bgserve.cloud.azureml.names import deployment_name, endpoint_name
    from bgserve.compose.backends import azureml_backend
    from tests.support.azureml import AzureMLStandIn

    stand_in = AzureMLStandIn()
    settings = Settings(**stand_in.settings(slot_ready_timeout_seconds=10))
    prefix = settings.azureml.name_prefix
    backend = azureml_backend(settings, client=stand_in.client())

    def weights(deployment: str) -> dict[int, int]:
        return routed(stand_in.traffic(endpoint_name(prefix, deployment)))

    def take_down(deployment: str, release_id: int) -> None:
        stand_in.take_down(endpoint_name(prefix, deployment), deployment_name(release_id))

    try:
        yield Harness("azureml", backend, RELEASES.__getitem__, weights, take_down)
    finally:
        backend.close()


# ----- Databricks: the real SDK on the stand-in's transport -----


def databricks_harness() -> Iterator[Harness]:
    """The backend through databricks-sdk on the stand-in (tests/support/databricks.py),
    whose config updates complete in 50 ms (the SDK's waiter polls after 1-2 s)."""
    from bgserve.cloud.databricks.entities import routed
    from bgserve.cloud.databricks.names import endpoint_name, entity_name
    from bgserve.compose.backends import databricks_backend
    from tests.support.databricks import DatabricksStandIn

    stand_in = DatabricksStandIn()
    settings = Settings(**stand_in.settings(slot_ready_timeout_seconds=20))
    prefix = settings.databricks.name_prefix
    backend = databricks_backend(settings, client=stand_in.client())

    def weights(deployment: str) -> dict[int, int]:
        from databricks.sdk.service.serving import ServingEndpointDetailed

        with stand_in.lock:
            found = stand_in.endpoints.get(endpoint_name(prefix, deployment))
            return routed(ServingEndpointDetailed.from_dict(found)) if found else {}

    def take_down(deployment: str, release_id: int) -> None:
        stand_in.take_down(endpoint_name(prefix, deployment), entity_name(release_id))

    try:
        yield Harness("databricks", backend, RELEASES.__getitem__, weights, take_down)
    finally:
        backend.close()


# ----- Vertex AI: the real GAPIC clients on the gRPC stand-in -----


def vertex_harness() -> Iterator[Harness]:
    """The backend through google-cloud-aiplatform's GAPIC clients on the stand-in
    (tests/support/vertex.py), whose operations complete in 50 ms."""
    from bgserve.cloud.vertex.names import endpoint_name
    from bgserve.cloud.vertex.resources import routed
    from bgserve.compose.backends import vertex_backend
    from tests.support.vertex import VertexStandIn

    stand_in = VertexStandIn()
    settings = Settings(**stand_in.settings(slot_ready_timeout_seconds=10))
    prefix = settings.vertex.name_prefix
    backend = vertex_backend(settings, clients=stand_in.clients())

    def weights(deployment: str) -> dict[int, int]:
        return routed(stand_in.split(endpoint_name(prefix, deployment)))

    def take_down(deployment: str, release_id: int) -> None:
        stand_in.take_down(endpoint_name(prefix, deployment), str(release_id))

    try:
        yield Harness("vertex", backend, RELEASES.__getitem__, weights, take_down)
    finally:
        backend.close()
        stand_in.close()
