"""Pure builders of the Kubernetes objects the Seldon backend applies.

Seldon Core v2 (``mlops.seldon.io/v1alpha1``, the default flavour): one Model per
release, loaded from the bundle's storage URI by a Server that has bgserve's
capabilities, and one Experiment per deployment, named after it, whose candidates
carry every routed release's weight. Clients call ``seldon-model: <deployment>.experiment``,
which survives every cutover.

Seldon Core v1 (``machinelearning.seldon.io/v1``): one SeldonDeployment per deployment
with one predictor per release (``r<id>``), each running the bgserve image as its
model container; the predictors' ``traffic`` fields carry the weights. Predictors are
named after releases, not roles, so a cutover changes numbers and restarts no pod.
Used by :mod:`bgserve.kube.seldon.v2` and by ``bgserve render``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bgserve.backends.routes import check_weights
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import InvalidInput
from bgserve.kube.client import RELEASE_LABEL, Resource, dns_label, managed_labels
from bgserve.kube.objects import (
    ANNOTATION_PREFIX,
    NO_MLFLOW,
    SlotMlflow,
    bundle_storage_uri,
    slot_container,
)
from bgserve.settings import KubeGroup

Obj = dict[str, Any]

MODEL = Resource("mlops.seldon.io", "v1alpha1", "models", "Model")
EXPERIMENT = Resource("mlops.seldon.io", "v1alpha1", "experiments", "Experiment")
SELDON_DEPLOYMENT = Resource(
    "machinelearning.seldon.io", "v1", "seldondeployments", "SeldonDeployment"
)
# Seldon v1 puts its executor on 8000 and expects the model container on 9000.
V1_MODEL_PORT = 9000
V1_EXECUTOR_PORT = 8000
V1_CONTAINER = "slot"
# Seldon v1 derives "<sdep>-<predictor>-<n>-<container>" Deployment names from these.
SDEP_NAME_MAX = 40


def model_name(deployment: str, release_id: int) -> str:
    """Name of the Seldon v2 Model serving ``release_id`` for ``deployment``."""
    return dns_label(deployment, f"-r{release_id}", 63)


def experiment_name(deployment: str) -> str:
    """Name of the deployment's Experiment: clients call ``<name>.experiment``."""
    return dns_label(deployment, "", 63)


def sdep_name(deployment: str) -> str:
    """Name of the deployment's Seldon v1 SeldonDeployment."""
    return dns_label(deployment, "", SDEP_NAME_MAX)


def predictor_name(release_id: int) -> str:
    """Name of the Seldon v1 predictor serving ``release_id``."""
    return f"r{release_id}"


def _release_annotations(release: Release) -> dict[str, str]:
    return {
        f"{ANNOTATION_PREFIX}model-uri": release.model_uri,
        f"{ANNOTATION_PREFIX}prompt-uri": release.prompt_uri,
        f"{ANNOTATION_PREFIX}bundle-uri": release.bundle_uri,
    }


def _metadata(name: str, kube: KubeGroup, labels: dict[str, str]) -> Obj:
    return {"name": name, "namespace": kube.namespace, "labels": labels}


def model(deployment: str, release: Release, kube: KubeGroup) -> Obj:
    """The Seldon v2 Model that serves ``release``'s bundle.

    Raises:
        InvalidInput: no bundle storage URI is configured (Seldon v2 Servers load
            models from storage, never from the MLflow registry).
    """
    storage = bundle_storage_uri(release, kube)
    if not storage:
        raise InvalidInput(
            "Seldon Core v2 loads models from storage: set BGSERVE_KUBE_BUNDLE_STORAGE_URI "
            "to where the bundles' artifacts are (e.g. s3://bucket/{bundle_name}/{bundle_version})",
            field="kube_bundle_storage_uri",
        )
    spec: Obj = {
        "storageUri": storage,
        "requirements": list(kube.seldon.requirements),
        "memory": kube.slot_memory,
        "replicas": 1,
    }
    if kube.seldon.server:
        spec["server"] = kube.seldon.server
    metadata = _metadata(
        model_name(deployment, release.id), kube, managed_labels(deployment, release.id)
    )
    return {
        "apiVersion": MODEL.api_version,
        "kind": MODEL.kind,
        "metadata": {**metadata, "annotations": _release_annotations(release)},
        "spec": spec,
    }


def experiment(deployment: str, routes: Sequence[Route], kube: KubeGroup) -> Obj:
    """The deployment's Experiment: one candidate per routed release, weights as given.

    Raises:
        InvalidInput: the weights do not sum to 100 or a release appears twice.
    """
    check_weights(deployment, routes)
    candidates = [
        {"name": model_name(deployment, r.release_id), "weight": r.weight} for r in routes
    ]
    spec: Obj = {"candidates": candidates}
    if kube.seldon.experiment_default:
        live = next((r for r in routes if r.role == "blue"), routes[0])
        spec["default"] = model_name(deployment, live.release_id)
    return {
        "apiVersion": EXPERIMENT.api_version,
        "kind": EXPERIMENT.kind,
        "metadata": _metadata(experiment_name(deployment), kube, managed_labels(deployment)),
        "spec": spec,
    }


def predictor(
    deployment: str,
    release: Release,
    traffic: int,
    kube: KubeGroup,
    mlflow: SlotMlflow = NO_MLFLOW,
) -> Obj:
    """The Seldon v1 predictor running ``release`` in the bgserve image."""
    container = slot_container(
        deployment, release, kube, mlflow=mlflow, name=V1_CONTAINER, port=V1_MODEL_PORT
    )
    container.pop("ports")  # Seldon adds the model port itself, named after the protocol
    graph: Obj = {
        "name": V1_CONTAINER,
        "type": "MODEL",
        "endpoint": {"type": "REST", "httpPort": V1_MODEL_PORT},
        "children": [],
    }
    storage = bundle_storage_uri(release, kube)
    if storage:
        graph["modelUri"] = storage  # Seldon's storage initializer fills /mnt/models
    pod: Obj = {"containers": [container]}
    if kube.slot_service_account:
        pod["serviceAccountName"] = kube.slot_service_account
    return {
        "name": predictor_name(release.id),
        "traffic": traffic,
        "replicas": 1,
        "labels": {RELEASE_LABEL: str(release.id)},
        "annotations": _release_annotations(release),
        "componentSpecs": [{"spec": pod}],
        "graph": graph,
    }


def seldon_deployment(deployment: str, predictors: Sequence[Obj], kube: KubeGroup) -> Obj:
    """The deployment's SeldonDeployment holding ``predictors`` (OIP v2 protocol)."""
    return {
        "apiVersion": SELDON_DEPLOYMENT.api_version,
        "kind": SELDON_DEPLOYMENT.kind,
        "metadata": _metadata(sdep_name(deployment), kube, managed_labels(deployment)),
        "spec": {"protocol": "v2", "predictors": list(predictors)},
    }


def predictors_of(obj: Mapping[str, Any] | None) -> list[Obj]:
    """The predictors of a SeldonDeployment (none if it does not exist)."""
    if obj is None:
        return []
    return list((obj.get("spec") or {}).get("predictors") or [])


def with_predictor(predictors: Sequence[Obj], new: Obj) -> list[Obj]:
    """``predictors`` with ``new`` replacing the one of the same name, or appended."""
    names = [p["name"] for p in predictors]
    if new["name"] in names:
        return [new if p["name"] == new["name"] else p for p in predictors]
    return [*predictors, new]


def with_traffic(deployment: str, predictors: Sequence[Obj], routes: Sequence[Route]) -> list[Obj]:
    """``predictors`` carrying the routes' weights; unrouted predictors get 0.

    Raises:
        InvalidInput: bad weights, or a routed release without a predictor.
    """
    check_weights(deployment, routes)
    weights = {predictor_name(r.release_id): r.weight for r in routes}
    missing = set(weights) - {p["name"] for p in predictors}
    if missing:
        raise InvalidInput(f"routes of {deployment} name releases without a predictor: {missing}")
    return [{**p, "traffic": weights.get(p["name"], 0)} for p in predictors]


def _known(deployment: str, routes: Sequence[Route], releases: Mapping[int, Release]) -> None:
    missing = [r.release_id for r in routes if r.release_id not in releases]
    if missing:
        raise InvalidInput(f"routes of {deployment} name unknown releases {missing}")


def seldon_objects(
    deployment: str,
    routes: Sequence[Route],
    releases: Mapping[int, Release],
    kube: KubeGroup,
    mlflow: SlotMlflow = NO_MLFLOW,
) -> list[Obj]:
    """Every object the Seldon backend applies for a deployment, by flavour: v2, one
    Model per routed release then the Experiment; v1, the one SeldonDeployment.

    Raises:
        InvalidInput: bad weights, a routed release missing from ``releases``, or (v2)
            no bundle storage URI.
    """
    _known(deployment, routes, releases)
    if kube.seldon.flavour == "v1":
        check_weights(deployment, routes)
        preds = [
            predictor(deployment, releases[r.release_id], r.weight, kube, mlflow) for r in routes
        ]
        return [seldon_deployment(deployment, preds, kube)]
    models = [model(deployment, releases[r.release_id], kube) for r in routes]
    return [*models, experiment(deployment, routes, kube)]
