"""The Vertex AI calls the backend is made of: read an endpoint or a model, create, deploy,
undeploy and delete, each waited for and translated (see :mod:`.google`). Holds no state
besides the clients and the settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bgserve.cloud.vertex import names
from bgserve.cloud.vertex.google import VertexClients, call, throttle_retry, wait
from bgserve.errors import BackendError
from bgserve.settings.cloud import VertexGroup


@dataclass
class Steps:
    """One call of the Vertex AI API each, every one retried while throttled."""

    vx: VertexGroup
    clients: VertexClients
    timeout: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    retry: Any = field(init=False)

    def __post_init__(self) -> None:
        self.retry = throttle_retry(self.vx.poll_seconds, self.timeout)

    # ----- names -----

    def endpoint_path(self, deployment: str) -> str:
        """``projects/*/locations/*/endpoints/<id>`` of ``deployment``."""
        endpoint_id = names.endpoint_name(self.vx.name_prefix, deployment)
        return names.resource(self.vx.project, self.vx.location, "endpoints", endpoint_id)

    def model_id(self, deployment: str, release_id: int) -> str:
        """The model id of a release in a deployment."""
        return names.model_name(self.vx.name_prefix, deployment, release_id)

    def model_path(self, deployment: str, release_id: int) -> str:
        """``projects/*/locations/*/models/<id>`` of a release in a deployment."""
        model_id = self.model_id(deployment, release_id)
        return names.resource(self.vx.project, self.vx.location, "models", model_id)

    # ----- reads -----

    def endpoint(self, deployment: str) -> Any:
        """The endpoint of ``deployment``, None when it does not exist."""
        get = self.clients.endpoints.get_endpoint
        path = self.endpoint_path(deployment)
        return call("get endpoint", get, name=path, retry=self.retry, missing_ok=True)

    def model(self, deployment: str, release_id: int) -> Any:
        """The model of a release, None when it does not exist."""
        get, path = self.clients.models.get_model, self.model_path(deployment, release_id)
        return call("get model", get, name=path, retry=self.retry, missing_ok=True)

    # ----- changes, each waited for until ``deadline`` -----

    def create_endpoint(self, deployment: str, message: Any, deadline: float) -> Any:
        """Create the endpoint under its id; the created endpoint. Raises BackendError
        (ALREADY_EXISTS for a taken id), ReadinessTimeout at ``deadline``."""
        endpoint_id = names.endpoint_name(self.vx.name_prefix, deployment)
        future = call(
            "create endpoint",
            self.clients.endpoints.create_endpoint,
            parent=self._location(),
            endpoint=message,
            endpoint_id=endpoint_id,
            retry=self.retry,
        )
        return self._wait("create endpoint", future, deadline)

    def upload_model(self, deployment: str, release_id: int, message: Any, deadline: float) -> None:
        """Upload a release's model under its id. Raises BackendError, ReadinessTimeout."""
        future = call(
            "upload model",
            self.clients.models.upload_model,
            request={
                "parent": self._location(),
                "model": message,
                "model_id": self.model_id(deployment, release_id),
            },
            retry=self.retry,
        )
        self._wait("upload model", future, deadline)

    def deploy(self, endpoint: str, deployed: Any) -> Any:
        """Start deploying ``deployed`` with the traffic split left as it is: the operation,
        to be waited for with :meth:`finish`."""
        return call(
            "deploy model",
            self.clients.endpoints.deploy_model,
            endpoint=endpoint,
            deployed_model=deployed,
            retry=self.retry,
        )

    def finish(self, operation: str, future: Any, deadline: float) -> Any:
        """The result of ``future`` once done. Raises BackendError, ReadinessTimeout."""
        return self._wait(operation, future, deadline)

    def set_split(self, endpoint: Any, split: dict[str, int]) -> None:
        """Write ``split`` as the endpoint's traffic split (one UpdateEndpoint). Raises
        BackendError when Vertex refuses it (the split stays as it was)."""
        from google.protobuf.field_mask_pb2 import FieldMask

        endpoint.traffic_split = split
        call(
            "update traffic split",
            self.clients.endpoints.update_endpoint,
            endpoint=endpoint,
            update_mask=FieldMask(paths=["traffic_split"]),
            retry=self.retry,
        )

    def undeploy(self, endpoint: str, deployed_id: str, deadline: float) -> None:
        """Undeploy one deployed model; nothing when it is gone. Raises BackendError
        (FAILED_PRECONDITION while it has traffic), ReadinessTimeout."""
        future = call(
            "undeploy model",
            self.clients.endpoints.undeploy_model,
            endpoint=endpoint,
            deployed_model_id=deployed_id,
            retry=self.retry,
            missing_ok=True,
        )
        if future is not None:
            self._wait("undeploy model", future, deadline)

    def delete_model(self, deployment: str, release_id: int, deadline: float) -> None:
        """Delete a release's model; nothing when it is gone. Raises BackendError
        (FAILED_PRECONDITION while deployed), ReadinessTimeout."""
        delete, path = self.clients.models.delete_model, self.model_path(deployment, release_id)
        future = call("delete model", delete, name=path, retry=self.retry, missing_ok=True)
        if future is not None:
            self._wait("delete model", future, deadline)

    def delete_endpoint(self, deployment: str, deadline: float) -> None:
        """Delete the endpoint; nothing when it is gone. Raises BackendError
        (FAILED_PRECONDITION with deployed models), ReadinessTimeout."""
        delete, path = self.clients.endpoints.delete_endpoint, self.endpoint_path(deployment)
        future = call("delete endpoint", delete, name=path, retry=self.retry, missing_ok=True)
        if future is not None:
            self._wait("delete endpoint", future, deadline)

    def cancel(self, future: Any, deadline: float) -> None:
        """Ask Vertex to cancel a running operation and wait until it stopped (cancelled or
        finished: either way nothing of it runs on)."""
        call("cancel operation", future.cancel)
        try:
            self._wait("cancel operation", future, deadline)
        except BackendError:
            if not call("cancel operation", future.done, retry=self.retry):
                raise

    def _wait(self, operation: str, future: Any, deadline: float) -> Any:
        poll = self.vx.poll_seconds
        return wait(operation, future, deadline, self.clock, self.sleep, poll, self.retry)

    def _location(self) -> str:
        return f"projects/{self.vx.project}/locations/{self.vx.location}"
