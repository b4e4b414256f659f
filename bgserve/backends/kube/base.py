"""What every Kubernetes backend (KServe, Seldon v1 and v2) shares: client, readiness, settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from bgserve.backends.kube.client import KubeObjects, api_client
from bgserve.backends.kube.objects import data_plane_url
from bgserve.backends.kube.readiness import Readiness
from bgserve.settings import Settings


class KubeBackend:
    """The Kubernetes client, the readiness watch and the object helpers of one backend."""

    def __init__(
        self,
        settings: Settings,
        *,
        api: client.ApiClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._client = api or api_client(settings)
        self._custom = client.CustomObjectsApi(self._client)
        self.readiness = Readiness(
            settings.slot_ready_timeout_seconds,
            settings.kube_resync_seconds,
            settings.kube_poll_interval_seconds,
            clock,
            sleep,
        )

    def _objects(self, resource: Any) -> KubeObjects:
        s = self.settings
        return KubeObjects(self._custom, resource, s.kube_namespace, s.kube_write_retries)

    def data_plane_url(self, deployment: str) -> str | None:
        """The gateway URL from settings (``kube_data_plane_url`` or the route hostname);
        None when neither is set. Pure, never raises."""
        return data_plane_url(deployment, self.settings)

    def close(self) -> None:
        """Close the API client's connection pool. Idempotent; slots keep running."""
        self._client.close()
