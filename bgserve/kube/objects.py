"""Object helpers both Kubernetes backends share: the slot container of the bgserve image,
where a bundle is fetched from, the weight check and the data-plane URL from kube."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, BgserveError, InvalidInput
from bgserve.kube.client import Obj
from bgserve.settings import KubeGroup

SLOT_PORT = 8080
MOUNT_PATH = "/mnt/models"
ANNOTATION_PREFIX = "bgserve.io/"


@dataclass(frozen=True)
class SlotMlflow:
    """The MLflow stores a slot pod loads its bundle from (None: the image's own)."""

    tracking_uri: str | None = None
    registry_uri: str | None = None


NO_MLFLOW = SlotMlflow()


def bundle_storage_uri(release: Release, kube: KubeGroup) -> str | None:
    """Where the storage initializer fetches the bundle from, if configured."""
    template = kube.bundle_storage_uri
    if not template:
        return None
    return template.format(
        bundle_name=release.bundle_name,
        bundle_version=release.bundle_version,
        release=release.name,
        release_id=release.id,
    )


def _slot_env(release: Release, kube: KubeGroup, mlflow: SlotMlflow) -> list[Obj]:
    storage = bundle_storage_uri(release, kube)
    if storage:
        return [{"name": "STORAGE_URI", "value": storage}]
    env = [
        {"name": "MLFLOW_TRACKING_URI", "value": mlflow.tracking_uri},
        {"name": "MLFLOW_REGISTRY_URI", "value": mlflow.registry_uri},
    ]
    return [e for e in env if e["value"]]


def slot_container(
    deployment: str,
    release: Release,
    kube: KubeGroup,
    *,
    mlflow: SlotMlflow = NO_MLFLOW,
    name: str = "kserve-container",
    port: int = SLOT_PORT,
) -> Obj:
    """The predictor container: the bgserve image running ``bgserve slot`` on ``port``."""
    model_uri = MOUNT_PATH if bundle_storage_uri(release, kube) else release.bundle_uri
    resources = {"cpu": kube.slot_cpu, "memory": kube.slot_memory}
    return {
        "name": name,
        "image": kube.slot_image,
        "command": ["bgserve"],
        "args": [
            "slot",
            "--model-uri",
            model_uri,
            "--deployment",
            deployment,
            "--release-id",
            str(release.id),
            # A pod's port must be reachable from the Service, not just loopback.
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
        ],
        "env": _slot_env(release, kube, mlflow),
        "ports": [{"name": "http1", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": f"/v2/models/{deployment}/ready", "port": port},
            "periodSeconds": 5,
        },
        "resources": {"requests": resources, "limits": dict(resources)},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def check_weights(
    deployment: str, routes: Sequence[Route], error: type[BgserveError] = InvalidInput
) -> None:
    """Raise ``error`` unless ``routes`` are distinct releases whose weights sum to 100.

    Object builders raise InvalidInput (bad input to ``bgserve render``); the backends pass
    BackendError, what the Backend protocol's ``set_routes`` raises.
    """
    if not routes or sum(r.weight for r in routes) != 100 or any(r.weight < 0 for r in routes):
        weights = [r.weight for r in routes]
        raise error(f"routes of {deployment} must have weights summing to 100, got {weights}")
    if len({r.release_id for r in routes}) != len(routes):
        raise error(f"routes of {deployment} name a release twice: {list(routes)}")


def route_hostname(deployment: str, kube: KubeGroup) -> str | None:
    template = kube.route_hostname
    return template.format(deployment=deployment, namespace=kube.namespace) or None


def gateway_base(deployment: str, kube: KubeGroup) -> str | None:
    """The gateway's base URL for ``deployment`` from settings (``kube_data_plane_url``,
    else the route hostname), without a trailing slash; None when neither is set."""
    if kube.data_plane_url:
        base = kube.data_plane_url.format(deployment=deployment, namespace=kube.namespace)
    elif host := route_hostname(deployment, kube):
        base = f"http://{host}"
    else:
        return None
    return base.rstrip("/")


def data_plane_url(deployment: str, kube: KubeGroup) -> str | None:
    """The deployment's infer URL on the weighted route (``{base}/v2/models/<deployment>/
    infer``, as the local backend answers), from settings; None without a gateway address.
    No cluster needed."""
    base = gateway_base(deployment, kube)
    return None if base is None else f"{base}/v2/models/{deployment}/infer"


def refuse_retiring_routed(deployment: str, release_id: int, weight: int) -> None:
    """Raise BackendError when the slot of ``release_id`` still takes ``weight`` > 0 percent
    of the deployment's traffic (the Backend protocol's ``retire_slot`` rule)."""
    if weight > 0:
        raise BackendError(
            f"release {release_id} still takes {weight}% of {deployment}'s traffic: "
            "route it to 0 before retiring it"
        )


def needs_availability(route: Route, current_weight: int) -> bool:
    """Whether giving ``route`` its weight needs the slot to be ready now.

    Never for blue while it takes traffic (a revert gives traffic back to the release
    that was serving it, whatever green's state), nor for a weight that does not grow.
    """
    if route.role == "blue" and current_weight > 0:
        return False
    return route.weight > current_weight
