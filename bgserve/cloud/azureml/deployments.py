"""What Azure ML says of an endpoint and its deployments, read as bgserve's slots and
weights, and the SDK entities that change them: no calls.

A deployment is one managed online endpoint; each release a managed online deployment
named ``release-<id>`` running the bgserve image. The route is the endpoint's ``traffic``
map (whole percents summing to 100, or an empty map while nothing is routed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bgserve.cloud.azureml.names import deployment_name, release_of_deployment
from bgserve.domain.release import Release
from bgserve.settings.cloud import AzureMLGroup
from bgserve.slot.sagemaker import DEPLOYMENT_ENV, MODEL_URI_ENV, PORT, RELEASE_ID_ENV

# Every resource bgserve creates carries it; an endpoint without it is not bgserve's.
MANAGED_BY = ("managed-by", "bgserve")
# A deployment serves once its provisioning succeeded: Azure reports Succeeded only after
# the container's readiness route answered.
READY = "Succeeded"
# An update keeps the old instances serving until the new ones are ready.
SERVING = frozenset({READY, "Updating"})
FAILED = frozenset({"Failed", "Canceled"})
# Azure forwards /score to the container's scoring route and probes the other two. The
# image's `serve` with a slot's environment answers SageMaker's contract (/ping, and
# /invocations taking OIP v2 infer and chat bodies) besides the slot's own OIP routes.
INFERENCE_CONFIG = {
    "liveness_route": {"port": PORT, "path": "/v2/health/live"},
    "readiness_route": {"port": PORT, "path": "/ping"},
    "scoring_route": {"port": PORT, "path": "/invocations"},
}
DEPLOYMENT_HEADER = "azureml-model-deployment"


def managed_tags() -> dict[str, str]:
    """The tags of every resource bgserve creates."""
    return {MANAGED_BY[0]: MANAGED_BY[1]}


def is_managed(tags: Mapping[str, str] | None) -> bool:
    """Whether a resource's tags say bgserve created it."""
    return (tags or {}).get(MANAGED_BY[0]) == MANAGED_BY[1]


def endpoint_entity(name: str) -> Any:
    """A new endpoint: key authentication, no traffic yet."""
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    return ManagedOnlineEndpoint(name=name, auth_mode="key", tags=managed_tags())


def slot_environment(deployment: str, release: Release, env: Mapping[str, str]) -> dict[str, str]:
    """The container environment that makes the image's ``serve`` the release's slot."""
    return {
        **env,
        MODEL_URI_ENV: release.bundle_uri,
        DEPLOYMENT_ENV: deployment,
        RELEASE_ID_ENV: str(release.id),
    }


def deployment_entity(
    endpoint: str, deployment: str, release: Release, az: AzureMLGroup, env: Mapping[str, str]
) -> Any:
    """The managed online deployment of one release: the bgserve image with the slot's
    environment and routes, ``az``'s instance type and count."""
    from azure.ai.ml.entities import Environment, ManagedOnlineDeployment

    return ManagedOnlineDeployment(
        name=deployment_name(release.id),
        endpoint_name=endpoint,
        environment=Environment(image=az.image, inference_config=INFERENCE_CONFIG),
        environment_variables=slot_environment(deployment, release, env),
        instance_type=az.instance_type,
        instance_count=az.instance_count,
        tags=managed_tags(),
    )


def deployment_differs(existing: Any, wanted: Mapping[str, str]) -> str | None:
    """What makes an existing online deployment another release's slot than the one whose
    environment is ``wanted`` (its tag, bundle, deployment or release), None if nothing.

    Release ids are a bgserve state's own: another state (a second install, a fresh
    database) under the same names means another release under the same id.
    """
    if not is_managed(existing.tags):
        return f"no tag {MANAGED_BY[0]}={MANAGED_BY[1]}"
    have = existing.environment_variables or {}
    for key in (MODEL_URI_ENV, DEPLOYMENT_ENV, RELEASE_ID_ENV):
        if have.get(key) != wanted[key]:
            return f"{key}={have.get(key)!r}, not {wanted[key]!r}"
    return None


def routed(traffic: Mapping[str, int] | None) -> dict[int, int]:
    """Each bgserve deployment's percent in an endpoint's traffic map, by release id
    (others, if a user added any, are left out)."""
    found = {}
    for name, percent in (traffic or {}).items():
        release_id = release_of_deployment(name)
        if release_id is not None:
            found[release_id] = int(percent)
    return found


def traffic_map(weights: Mapping[int, int]) -> dict[str, int]:
    """The endpoint's traffic map for ``weights``: zeros left out, as the SDK strips them."""
    return {deployment_name(r): w for r, w in sorted(weights.items()) if w > 0}
