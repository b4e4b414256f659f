"""What every Kubernetes backend (KServe, Seldon v1 and v2) shares: client, readiness, kube."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from bgserve.kube.client import KubeObjects, api_client
from bgserve.kube.objects import NO_MLFLOW, SlotMlflow, data_plane_url
from bgserve.kube.readiness import Readiness
from bgserve.settings import KubeGroup


class KubeBackend:
    """The Kubernetes client, the readiness watch and the object helpers of one backend.

    ``kube`` is the Kubernetes group of the settings; ``ready_timeout`` how long a slot
    may take to become ready; ``mlflow`` the stores a slot loads its bundle from when no
    bundle storage URI is set.
    """

    def __init__(
        self,
        kube: KubeGroup,
        *,
        ready_timeout: float = 120.0,
        mlflow: SlotMlflow = NO_MLFLOW,
        api: client.ApiClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.kube = kube
        self.mlflow = mlflow
        self._client = api or api_client(kube)
        self._custom = client.CustomObjectsApi(self._client)
        self.readiness = Readiness(
            ready_timeout,
            kube.resync_seconds,
            kube.poll_interval_seconds,
            clock,
            sleep,
        )

    def _objects(self, resource: Any) -> KubeObjects:
        s = self.kube
        return KubeObjects(self._custom, resource, s.namespace, s.write_retries)

    def data_plane_url(self, deployment: str) -> str | None:
        """The gateway URL from settings (``kube_data_plane_url`` or the route hostname);
        None when neither is set. Pure, never raises."""
        return data_plane_url(deployment, self.kube)

    def close(self) -> None:
        """Close the API client's connection pool. Idempotent; slots keep running."""
        self._client.close()
