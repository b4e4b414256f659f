"""Pure builders of LLMInferenceServices that carry a deployment's split in KServe's
routing group (``spec.router.route.group`` + ``weight``, kserve#5725).

Each routed release is one LLMInferenceService (``serving.kserve.io/v1alpha2``), a member
of the group named after the deployment, with its route weight as its ``weight``: blue
and green their shares, a standby 0. KServe's controller writes the HTTPRoutes: every
member's route carries weighted backendRefs for all routable members that serve the
same ``spec.model.name``, so every member serves the deployment's name. bgserve writes no
route of its own on this path.

The ``main`` container is the bgserve slot on port 8000 (the port KServe's LLM routes and
Services target) instead of vLLM: the slot renders the release's prompt, which vLLM
cannot. Weights are proportional and live on separate objects, so a change of split is
several writes; :func:`weight_writes` orders them so that traffic never meets an
all-zero group and, between blue and green, each intermediate share lies between the old
and the new one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bgserve.backends.routes import check_weights
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import InvalidInput
from bgserve.kube.client import Obj, Resource, dns_label, is_managed, managed_labels
from bgserve.kube.kserve.llm_objects import LlmServing, llm_annotations, llm_slot_container
from bgserve.kube.kserve.objects import ISVC_NAME_MAX
from bgserve.kube.objects import ANNOTATION_PREFIX, NO_MLFLOW, SlotMlflow, slot_container
from bgserve.settings.kube import KubeGroup

LLM_INFERENCE_SERVICE = Resource(
    "serving.kserve.io", "v1alpha2", "llminferenceservices", "LLMInferenceService"
)
LLM_PORT = 8000
WORKLOAD_SERVICE_SUFFIX = "-kserve-workload-svc"
# KServe's force-stop annotation: the member keeps its place in the group, without pods.
STOP_ANNOTATION = "serving.kserve.io/stop"


def llmisvc_name(deployment: str, release_id: int) -> str:
    """Name of the LLMInferenceService serving ``release_id`` (KServe derives
    ``<name>-kserve-route``, ``<name>-kserve-workload-svc``, ... from it)."""
    return dns_label(deployment, f"-r{release_id}", ISVC_NAME_MAX)


def routing_group(deployment: str) -> str:
    """The KServe routing group of a deployment: its name (already a DNS-1123 label)."""
    return deployment


def _model_source(release: Release, container: Obj) -> tuple[str, bool]:
    """``spec.model.uri`` and whether KServe's storage initializer should fetch it, from the
    slot container: its STORAGE_URI (a GGUF or the bundle), else the registry's bundle."""
    storage = next((e["value"] for e in container["env"] if e["name"] == "STORAGE_URI"), None)
    if storage:
        return str(storage), True
    # The slot reads the bundle from the registry itself; the field is required.
    return release.bundle_uri, False


def _probe(deployment: str) -> Obj:
    return {
        "httpGet": {"path": f"/v2/models/{deployment}/ready", "port": LLM_PORT, "scheme": "HTTP"}
    }


def _main_container(
    deployment: str,
    release: Release,
    llm: LlmServing,
    kube: KubeGroup,
    mlflow: SlotMlflow = NO_MLFLOW,
) -> tuple[Obj, str, bool]:
    """The slot as the ``main`` container, with ``spec.model.uri`` and whether to fetch it."""
    base = slot_container(deployment, release, kube, mlflow=mlflow, name="main", port=LLM_PORT)
    container = llm_slot_container(base, release, llm, kube, mlflow)
    uri, fetch = _model_source(release, container)
    # STORAGE_URI is the InferenceService way; here spec.model.uri carries it.
    container["env"] = [e for e in container["env"] if e["name"] != "STORAGE_URI"]
    # KServe's template probes /health under its TLS setting: every probe is replaced.
    container["readinessProbe"] = {**_probe(deployment), "periodSeconds": 5}
    container["livenessProbe"] = {**_probe(deployment), "periodSeconds": 10, "failureThreshold": 6}
    container["startupProbe"] = {**_probe(deployment), "periodSeconds": 5, "failureThreshold": 60}
    return container, uri, fetch


def llm_inference_service(
    deployment: str,
    release: Release,
    llm: LlmServing,
    weight: int,
    kube: KubeGroup,
    mlflow: SlotMlflow = NO_MLFLOW,
) -> Obj:
    """The LLMInferenceService of ``release``: a member of the deployment's routing group
    with ``weight``, serving the model name ``deployment`` from the bgserve slot."""
    container, uri, fetch = _main_container(deployment, release, llm, kube, mlflow)
    template: Obj = {"containers": [container]}
    if kube.slot_service_account:
        template["serviceAccountName"] = kube.slot_service_account
    gateway: Obj = {"name": kube.gateway_name}
    if kube.gateway_namespace:
        gateway["namespace"] = kube.gateway_namespace
    annotations = {
        f"{ANNOTATION_PREFIX}model-uri": release.model_uri,
        f"{ANNOTATION_PREFIX}prompt-uri": release.prompt_uri,
        f"{ANNOTATION_PREFIX}bundle-uri": release.bundle_uri,
        **llm_annotations(llm),
    }
    return {
        "apiVersion": LLM_INFERENCE_SERVICE.api_version,
        "kind": LLM_INFERENCE_SERVICE.kind,
        "metadata": {
            "name": llmisvc_name(deployment, release.id),
            "namespace": kube.namespace,
            "labels": managed_labels(deployment, release.id),
            "annotations": annotations,
        },
        "spec": {
            "model": {"uri": uri, "name": deployment},
            "storageInitializer": {"enabled": fetch},
            "replicas": 1,
            "template": template,
            "router": {
                "route": {"group": routing_group(deployment), "weight": weight},
                "gateway": {"refs": [gateway]},
            },
        },
    }


def llmisvc_objects(
    deployment: str,
    routes: Sequence[Route],
    releases: Mapping[int, Release],
    llms: Mapping[int, LlmServing],
    kube: KubeGroup,
    mlflow: SlotMlflow = NO_MLFLOW,
) -> list[Obj]:
    """One LLMInferenceService per routed release, in route order, weighted as routed.

    Raises:
        InvalidInput: bad weights, or a routed release missing from ``releases`` or
        without an LLM in ``llms``.
    """
    check_weights(deployment, routes)
    missing = [r.release_id for r in routes if r.release_id not in releases]
    if missing:
        raise InvalidInput(f"routes of {deployment} name unknown releases {missing}")
    not_llm = [r.release_id for r in routes if r.release_id not in llms]
    if not_llm:
        raise InvalidInput(
            f"releases {not_llm} of {deployment} pin no LLM: an LLMInferenceService serves "
            "LLM releases only (use the InferenceService rendering)",
            field="model_uri",
        )
    return [
        llm_inference_service(
            deployment, releases[r.release_id], llms[r.release_id], r.weight, kube, mlflow
        )
        for r in routes
    ]


def member_weight(obj: Mapping[str, Any] | None, deployment: str) -> int:
    """The traffic weight a bgserve-managed LLMInferenceService declares in the
    deployment's group; 0 when absent, foreign, stopped or in another group."""
    if not obj or not is_managed(obj):
        return 0
    if obj.get("metadata", {}).get("annotations", {}).get(STOP_ANNOTATION) == "true":
        return 0
    route = obj.get("spec", {}).get("router", {}).get("route", {})
    if route.get("group") != routing_group(deployment):
        return 0
    return int(route.get("weight", 0))


def declared_weight(obj: Mapping[str, Any] | None) -> int:
    """The weight a member's spec declares (0 for none), stopped or not: what a rewrite of
    the member keeps, so re-applying it never moves traffic."""
    route = ((obj or {}).get("spec", {}).get("router") or {}).get("route") or {}
    return int(route.get("weight", 0))


def weight_only(deployment: str, release_id: int, weight: int, kube: KubeGroup) -> Obj:
    """The member of ``release_id`` reduced to its weight: what the weights' own field
    manager applies, so a change of split touches no field of the member's rendering."""
    return {
        "apiVersion": LLM_INFERENCE_SERVICE.api_version,
        "kind": LLM_INFERENCE_SERVICE.kind,
        "metadata": {"name": llmisvc_name(deployment, release_id), "namespace": kube.namespace},
        "spec": {"router": {"route": {"weight": weight}}},
    }


def member_endpoint(obj: Mapping[str, Any], namespace: str) -> str:
    """A member's own address, bypassing the group's split: its workload Service (the one
    KServe reports in ``status.workloads.service``, else ``<name>-kserve-workload-svc``) on
    the slot's port, where the slot answers OIP and OpenAI alike."""
    name = obj["metadata"]["name"]
    reported = ((obj.get("status", {}).get("workloads") or {}).get("service") or {}).get("name")
    service = reported or f"{name}{WORKLOAD_SERVICE_SUFFIX}"
    return f"http://{service}.{namespace}.svc.cluster.local:{LLM_PORT}"


def weight_writes(current: Mapping[str, int], desired: Mapping[str, int]) -> list[tuple[str, int]]:
    """The order in which to write members' weights to go from ``current`` to ``desired``
    (both by LLMInferenceService name; a name absent from ``current`` has weight 0).

    Weights shrink first, so traffic leaves a release being reverted at the first write,
    unless that would leave every member at 0 (a group without weight serves nothing):
    then the growing weights go first. When two members share 100 before and after (blue
    and green; a standby at 0 aside), every intermediate share lies between the old and
    the new one.
    """
    changes = {n: w for n, w in desired.items() if current.get(n, 0) != w}
    shrink = [(n, w) for n, w in changes.items() if w < current.get(n, 0)]
    grow = [(n, w) for n, w in changes.items() if w > current.get(n, 0)]
    after_shrink = {**current, **dict(shrink)}
    if sum(after_shrink.values()) > 0:
        return shrink + grow
    return grow + shrink
