"""Pure builders of the Kubernetes objects the KServe backend applies.

Plain camelCase dicts, not the kserve SDK's model classes: those serialize to
snake_case with newer kubernetes clients, which the API server silently prunes.
Used by :class:`~bgserve.kube.kserve.backend.KServeBackend` and by ``bgserve render``.

Serving path: each release runs in a custom predictor container of the bgserve image
(``bgserve slot``), so the MLflow version that built the bundle is the one that loads
it. The weighted route is a Gateway API HTTPRoute or an Istio VirtualService whose
destinations are the InferenceServices' predictor Services.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bgserve.backends.routes import check_weights
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import InvalidInput
from bgserve.kube.client import Obj, Resource, dns_label, managed_labels
from bgserve.kube.objects import (
    ANNOTATION_PREFIX,
    NO_MLFLOW,
    SlotMlflow,
    route_hostname,
    slot_container,
)
from bgserve.settings import KubeGroup

INFERENCE_SERVICE = Resource(
    "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
)
HTTP_ROUTE = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
VIRTUAL_SERVICE = Resource("networking.istio.io", "v1", "virtualservices", "VirtualService")
ROUTERS = {"gateway": HTTP_ROUTE, "istio": VIRTUAL_SERVICE}

# In Knative mode KServe derives "<name>-predictor-00001" revisions from the name,
# which must stay a 63-character DNS label.
ISVC_NAME_MAX = 45
SERVICE_PORT = 80
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"


def isvc_name(deployment: str, release_id: int) -> str:
    """Name of the InferenceService serving ``release_id`` for ``deployment``."""
    return dns_label(deployment, f"-r{release_id}", ISVC_NAME_MAX)


def route_name(deployment: str) -> str:
    """Name of the deployment's HTTPRoute or VirtualService."""
    return dns_label("bgserve", f"-{deployment}", 253)


def predictor_host(deployment: str, release_id: int, namespace: str) -> str:
    """Cluster-local host of the predictor Service KServe creates for a slot."""
    return f"{isvc_name(deployment, release_id)}-predictor.{namespace}.svc.cluster.local"


def _metadata(name: str, kube: KubeGroup, labels: dict[str, str]) -> Obj:
    return {"name": name, "namespace": kube.namespace, "labels": labels}


def inference_service(
    deployment: str, release: Release, kube: KubeGroup, mlflow: SlotMlflow = NO_MLFLOW
) -> Obj:
    """The InferenceService that serves ``release``'s bundle for ``deployment``."""
    annotations = {
        f"{ANNOTATION_PREFIX}model-uri": release.model_uri,
        f"{ANNOTATION_PREFIX}prompt-uri": release.prompt_uri,
        f"{ANNOTATION_PREFIX}bundle-uri": release.bundle_uri,
    }
    if kube.kserve.deployment_mode:
        annotations[DEPLOYMENT_MODE] = kube.kserve.deployment_mode
    metadata = _metadata(
        isvc_name(deployment, release.id), kube, managed_labels(deployment, release.id)
    )
    predictor: Obj = {
        "minReplicas": 1,
        "containers": [slot_container(deployment, release, kube, mlflow=mlflow)],
    }
    if kube.slot_service_account:
        predictor["serviceAccountName"] = kube.slot_service_account
    return {
        "apiVersion": INFERENCE_SERVICE.api_version,
        "kind": INFERENCE_SERVICE.kind,
        "metadata": {**metadata, "annotations": annotations},
        "spec": {"predictor": predictor},
    }


def http_route(deployment: str, routes: Sequence[Route], kube: KubeGroup) -> Obj:
    """A Gateway API HTTPRoute splitting ``/v2/models/<deployment>`` by the routes' weights.

    No filter on the backendRefs: the slot names its release on each answer itself
    (:mod:`bgserve.slot.release_header` says why a filter there drops requests on Envoy
    Gateway)."""
    parent = {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": kube.gateway_name,
    }
    if kube.gateway_namespace:
        parent["namespace"] = kube.gateway_namespace
    backends = [
        {
            "group": "",
            "kind": "Service",
            "name": f"{isvc_name(deployment, r.release_id)}-predictor",
            "port": SERVICE_PORT,
            "weight": r.weight,
        }
        for r in routes
    ]
    rule = {
        "matches": [{"path": {"type": "PathPrefix", "value": f"/v2/models/{deployment}"}}],
        "backendRefs": backends,
    }
    spec: Obj = {"parentRefs": [parent], "rules": [rule]}
    host = route_hostname(deployment, kube)
    if host:
        spec["hostnames"] = [host]
    return {
        "apiVersion": HTTP_ROUTE.api_version,
        "kind": HTTP_ROUTE.kind,
        "metadata": _metadata(route_name(deployment), kube, managed_labels(deployment)),
        "spec": spec,
    }


def virtual_service(deployment: str, routes: Sequence[Route], kube: KubeGroup) -> Obj:
    """An Istio VirtualService splitting ``/v2/models/<deployment>`` by the routes' weights."""
    namespace = kube.namespace
    destinations = [
        {
            "destination": {
                "host": predictor_host(deployment, r.release_id, namespace),
                "port": {"number": SERVICE_PORT},
            },
            "weight": r.weight,
            "headers": {
                "response": {
                    "set": {"x-bgserve-slot": r.role, "x-bgserve-release": str(r.release_id)}
                }
            },
        }
        for r in routes
    ]
    path = f"/v2/models/{deployment}"
    gateway = f"{kube.gateway_namespace or namespace}/{kube.gateway_name}"
    http = {
        "name": "weighted",
        "match": [{"uri": {"exact": path}}, {"uri": {"prefix": path + "/"}}],
        "route": destinations,
    }
    return {
        "apiVersion": VIRTUAL_SERVICE.api_version,
        "kind": VIRTUAL_SERVICE.kind,
        "metadata": _metadata(route_name(deployment), kube, managed_labels(deployment)),
        "spec": {
            "hosts": [route_hostname(deployment, kube) or "*"],
            "gateways": [gateway],
            "http": [http],
        },
    }


def weighted_route(deployment: str, routes: Sequence[Route], kube: KubeGroup) -> Obj:
    """The route object of the configured router (``BGSERVE_KSERVE_ROUTER``).

    Raises:
        InvalidInput: the weights do not sum to 100 or a release appears twice.
    """
    check_weights(deployment, routes)
    build = http_route if kube.kserve.router == "gateway" else virtual_service
    return build(deployment, routes, kube)


def kserve_objects(
    deployment: str,
    routes: Sequence[Route],
    releases: Mapping[int, Release],
    kube: KubeGroup,
    mlflow: SlotMlflow = NO_MLFLOW,
) -> list[Obj]:
    """Every object the KServe backend applies for a deployment: one InferenceService
    per routed release (in route order), then the weighted route.

    Raises:
        InvalidInput: bad weights, or a routed release missing from ``releases``.
    """
    missing = [r.release_id for r in routes if r.release_id not in releases]
    if missing:
        raise InvalidInput(f"routes of {deployment} name unknown releases {missing}")
    services = [inference_service(deployment, releases[r.release_id], kube, mlflow) for r in routes]
    return [*services, weighted_route(deployment, routes, kube)]


def routed_weight(route: Mapping[str, Any] | None, deployment: str, release_id: int) -> int:
    """The weight ``route`` (an HTTPRoute or VirtualService bgserve wrote) gives the slot of
    ``release_id``; 0 when there is no route or it does not name the slot."""
    if not route:
        return 0
    service = f"{isvc_name(deployment, release_id)}-predictor"
    spec = route.get("spec", {})
    weights = [
        int(ref.get("weight", 0))
        for rule in spec.get("rules", [])
        for ref in rule.get("backendRefs", [])
        if ref.get("name") == service
    ]
    weights += [
        int(dest.get("weight", 0))
        for http in spec.get("http", [])
        for dest in http.get("route", [])
        if str(dest.get("destination", {}).get("host", "")).startswith(service + ".")
    ]
    return max(weights, default=0)
