"""What Vertex AI says of an endpoint and its deployed models, read as bgserve's slots and
weights, and the request messages that change them: no calls.

A deployment is one dedicated endpoint (``dedicated_endpoint_enabled``: its own DNS name,
and the only kind of endpoint whose deployed models can be called one at a time); each
release a Model running the bgserve image and a DeployedModel of it whose id is the release
id. The route is the endpoint's ``traffic_split`` (deployed model id -> percent, summing to
100; a release at 0 is left out).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bgserve.cloud.azureml.deployments import slot_environment
from bgserve.cloud.vertex.names import deployed_model_id, display_name, release_of
from bgserve.domain.release import Release
from bgserve.settings.cloud import VertexGroup
from bgserve.slot.sagemaker import DEPLOYMENT_ENV, MODEL_URI_ENV, PORT, RELEASE_ID_ENV

MANAGED_BY = ("managed-by", "bgserve")
DEPLOYMENT_LABEL = "bgserve-deployment"
# Vertex probes the health route; with the invoke prefix "/*" every path of the container
# is reachable as .../invoke/<path>, the slot's OIP routes and /invocations alike (the
# container spec takes either a predict route or the invoke prefix, not both).
HEALTH_ROUTE = "/ping"
INVOKE_PREFIX = "/*"
SCORING_PATH = "/invocations"


def managed_labels(deployment: str) -> dict[str, str]:
    """The labels of every resource bgserve creates (label values: lowercase, digits, '-',
    as bgserve's deployment names are)."""
    return {MANAGED_BY[0]: MANAGED_BY[1], DEPLOYMENT_LABEL: deployment}


def is_managed(labels: Mapping[str, str] | None) -> bool:
    """Whether a resource's labels say bgserve created it."""
    return (labels or {}).get(MANAGED_BY[0]) == MANAGED_BY[1]


def endpoint_message(deployment: str) -> Any:
    """A new dedicated endpoint with no deployed model and no traffic."""
    from google.cloud.aiplatform_v1 import Endpoint

    return Endpoint(
        display_name=deployment,
        labels=managed_labels(deployment),
        dedicated_endpoint_enabled=True,
    )


def model_message(
    deployment: str, release: Release, vx: VertexGroup, env: Mapping[str, str]
) -> Any:
    """The Model of one release: the bgserve image with the slot's environment, its health
    route and every path open to the invoke API."""
    from google.cloud.aiplatform_v1 import EnvVar, Model, ModelContainerSpec, Port

    variables = slot_environment(deployment, release, env)
    container = ModelContainerSpec(
        image_uri=vx.image,
        env=[EnvVar(name=k, value=v) for k, v in sorted(variables.items())],
        ports=[Port(container_port=PORT)],
        health_route=HEALTH_ROUTE,
        invoke_route_prefix=INVOKE_PREFIX,
    )
    labels = {**managed_labels(deployment), "bgserve-release": str(release.id)}
    return Model(
        display_name=f"{deployment}-{display_name(release.id)}",
        container_spec=container,
        labels=labels,
    )


def deployed_model_message(model: str, release_id: int, vx: VertexGroup) -> Any:
    """The DeployedModel of one release: ``model`` on dedicated machines of ``vx``'s type."""
    from google.cloud.aiplatform_v1 import DedicatedResources, DeployedModel, MachineSpec

    resources = DedicatedResources(
        machine_spec=MachineSpec(machine_type=vx.machine_type),
        min_replica_count=vx.replica_count,
        max_replica_count=vx.replica_count,
    )
    return DeployedModel(
        id=deployed_model_id(release_id),
        model=model,
        display_name=display_name(release_id),
        dedicated_resources=resources,
    )


def model_differs(model: Any, wanted: Mapping[str, str]) -> str | None:
    """What makes an existing Model another release's slot than the one whose environment is
    ``wanted`` (its labels, bundle, deployment or release), None if nothing."""
    if not is_managed(model.labels):
        return f"no label {MANAGED_BY[0]}={MANAGED_BY[1]}"
    have = {e.name: e.value for e in model.container_spec.env}
    for key in (MODEL_URI_ENV, DEPLOYMENT_ENV, RELEASE_ID_ENV):
        if have.get(key) != wanted[key]:
            return f"{key}={have.get(key)!r}, not {wanted[key]!r}"
    return None


def deployed_by_release(endpoint: Any) -> dict[int, Any]:
    """The endpoint's deployed models bgserve made, by release id."""
    found = {}
    for deployed in endpoint.deployed_models:
        release_id = release_of(deployed.id)
        if release_id is not None and deployed.display_name == display_name(release_id):
            found[release_id] = deployed
    return found


def serves(deployed: Any) -> bool:
    """Whether a deployed model has a replica available (Vertex's runtime status)."""
    return int(deployed.status.available_replica_count) > 0


def routed(split: Mapping[str, int]) -> dict[int, int]:
    """Each bgserve deployed model's percent in a traffic split, by release id."""
    return {r: int(p) for k, p in split.items() if (r := release_of(k)) is not None}


def traffic_split(weights: Mapping[int, int]) -> dict[str, int]:
    """The traffic split of ``weights``: zeros left out (Vertex routes nothing to an id the
    split does not name)."""
    return {deployed_model_id(r): w for r, w in sorted(weights.items()) if w > 0}
