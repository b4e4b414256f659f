"""Object helpers both Kubernetes backends share: the slot container of the bgserve image,
where a bundle is fetched from, the weight check and the data-plane URL from kube."""

from __future__ import annotations

from dataclasses import dataclass

from bgserve.domain.release import Release
from bgserve.kube.client import Obj
from bgserve.settings import KubeGroup
from bgserve.slot.exchanges import TOKEN_ENV

SLOT_PORT = 8080
MOUNT_PATH = "/mnt/models"
ANNOTATION_PREFIX = "bgserve.io/"
SLOT_TOKEN_KEY = "token"
"""The key of the slot token's Secret (``BGSERVE_KUBE_SLOT_TOKEN_SECRET``)."""
SLOT_EXCHANGE_RECORDS = 2048
"""Exchanges a slot pod keeps for pairing while bgserve drains it."""


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
    return [*_bundle_env(release, kube, mlflow), *_token_env(kube)]


def _bundle_env(release: Release, kube: KubeGroup, mlflow: SlotMlflow) -> list[Obj]:
    storage = bundle_storage_uri(release, kube)
    if storage:
        return [{"name": "STORAGE_URI", "value": storage}]
    env = [
        {"name": "MLFLOW_TRACKING_URI", "value": mlflow.tracking_uri},
        {"name": "MLFLOW_REGISTRY_URI", "value": mlflow.registry_uri},
    ]
    return [e for e in env if e["value"]]


def _token_env(kube: KubeGroup) -> list[Obj]:
    """The slot's drain token, from its Secret (never written into the object itself)."""
    if not kube.slot_token_secret:
        return []
    secret = {"name": kube.slot_token_secret, "key": SLOT_TOKEN_KEY}
    return [{"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": secret}}]


def _records_args(kube: KubeGroup) -> list[str]:
    """With a drain token, the slot keeps the exchanges it answers while bgserve drains
    them (to pair a gateway's mirrored copies: :mod:`bgserve.slot.exchanges`)."""
    return ["--exchange-records", str(SLOT_EXCHANGE_RECORDS)] if kube.slot_token_secret else []


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
            *_records_args(kube),
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
