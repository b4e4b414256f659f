"""The Vertex AI backend: a deployment is one dedicated endpoint, a release one Model (the
bgserve image) and one DeployedModel of it, and the route the endpoint's traffic split.

- ``ensure_slot`` creates the endpoint (the first release), uploads the release's model and
  deploys it with the traffic split left as it is; Vertex finishes the deploy operation
  once the container's health route answers.
- ``set_routes`` is one UpdateEndpoint of ``traffic_split``: every percent at once.
- ``retire_slot`` undeploys the release (Vertex refuses while it has traffic) and deletes
  its model; the last one takes its endpoint with it.

Throttling (RESOURCE_EXHAUSTED) and UNAVAILABLE are retried with a growing wait until the
ready timeout. Errors of the SDK become BackendError where they enter (:mod:`.google`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from bgserve.backends.base import SlotCall, SlotInfo
from bgserve.backends.routes import check_weights, needs_availability, refuse_retiring_routed
from bgserve.cloud.azureml.deployments import slot_environment
from bgserve.cloud.vertex import names
from bgserve.cloud.vertex.google import (
    VertexClients,
    bearer_token,
    monitoring_client,
    vertex_clients,
)
from bgserve.cloud.vertex.resources import (
    MANAGED_BY,
    SCORING_PATH,
    deployed_by_release,
    deployed_model_message,
    endpoint_message,
    is_managed,
    model_differs,
    model_message,
    routed,
    serves,
    traffic_split,
)
from bgserve.cloud.vertex.steps import Steps
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.settings.cloud import VertexGroup

log = logging.getLogger(__name__)


class VertexBackend:
    """Slots as deployed models of one dedicated Vertex AI endpoint per deployment."""

    name = "vertex"

    def __init__(
        self,
        vx: VertexGroup,
        *,
        ready_timeout: float,
        slot_env: Mapping[str, str] | None = None,
        clients: VertexClients | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``slot_env`` goes into every model's container environment; ``clients`` are the
        GAPIC clients to use (default: the settings' region with Application Default
        Credentials). Raises BackendError without an image, a project, a location, the SDK
        or credentials."""
        if not vx.image:
            raise BackendError("the vertex backend needs BGSERVE_VERTEX_IMAGE")
        self.vx = vx
        self.ready_timeout = ready_timeout
        self.slot_env = dict(slot_env or {})
        self.clients = clients if clients is not None else vertex_clients(vx)
        self.steps = Steps(vx, self.clients, ready_timeout, clock, sleep)
        self.clock, self.sleep = clock, sleep
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ----- the Backend protocol -----

    def ensure_slot(self, deployment: str, release: Release) -> SlotInfo:
        """Upload the release's model and deploy it with no traffic (the first one creates
        the endpoint), then wait until Vertex reports it deployed with a replica available.

        Idempotent: an existing deployed model of this release is only waited for. Never
        changes the traffic split. Raises ReadinessTimeout when the deploy does not finish
        within the ready timeout (it is cancelled), BackendError when Vertex refuses or the
        deploy fails; what this call created (deployed model, model, endpoint) is then
        removed.
        """
        deadline = self.clock() + self.ready_timeout
        names.deployed_model_id(release.id)
        with self._lock(deployment):
            endpoint = self._endpoint(deployment, managed=True)
            if endpoint is not None and release.id in deployed_by_release(endpoint):
                self._refuse_other(deployment, release, self.steps.model(deployment, release.id))
                return self._until_ready(deployment, release.id, deadline)
            made: list[str] = []
            try:
                if endpoint is None:
                    endpoint = self.steps.create_endpoint(
                        deployment, endpoint_message(deployment), deadline
                    )
                    made.append("endpoint")
                if self._ensure_model(deployment, release, deadline):
                    made.append("model")
                self._deploy(endpoint.name, deployment, release.id, deadline)
                return self._until_ready(deployment, release.id, deadline)
            except BaseException:
                self._undo(deployment, release.id, made)
                raise

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        """Set the endpoint's traffic split to the routes' percents (a release the routes
        leave out gets none) in one UpdateEndpoint.

        Idempotent: a split already in place is not written again. Raises BackendError,
        leaving the split as it was, for routes that do not sum to 100, name a release
        without a deployed model, or give more traffic to one with no replica available.
        """
        check_weights(deployment, routes, BackendError)
        with self._lock(deployment):
            endpoint = self._endpoint(deployment, managed=True)
            found = deployed_by_release(endpoint) if endpoint is not None else {}
            missing = sorted(r.release_id for r in routes if r.release_id not in found)
            if missing:
                raise BackendError(
                    f"{deployment} has no slot for release {', '.join(map(str, missing))} "
                    "on Vertex AI: ensure its slot before routing to it"
                )
            current = routed(endpoint.traffic_split)
            for route in routes:
                grows = needs_availability(route, current.get(route.release_id, 0))
                if grows and not serves(found[route.release_id]):
                    raise BackendError(
                        f"release {route.release_id}'s deployed model on {deployment} has no "
                        f"replica available: it cannot take {route.weight}%"
                    )
            wanted = traffic_split({r.release_id: r.weight for r in routes})
            if wanted != {k: v for k, v in endpoint.traffic_split.items() if v}:
                self.steps.set_split(endpoint, wanted)

    def retire_slot(self, deployment: str, release_id: int) -> None:
        """Undeploy the release's model and delete the model (the endpoint too when it was
        the last deployed model on it).

        Idempotent: what does not exist is not an error. Raises BackendError, removing
        nothing, while the deployed model has traffic.
        """
        deadline = self.clock() + self.ready_timeout
        with self._lock(deployment):
            endpoint = self._endpoint(deployment, managed=True)
            if endpoint is not None and release_id in deployed_by_release(endpoint):
                percent = routed(endpoint.traffic_split).get(release_id, 0)
                refuse_retiring_routed(deployment, release_id, percent)
                self.steps.undeploy(endpoint.name, str(release_id), deadline)
            self._delete_model(deployment, release_id, deadline)
            if endpoint is not None:
                left = self.steps.endpoint(deployment)
                if left is not None and not left.deployed_models:
                    self.steps.delete_endpoint(deployment, deadline)

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        """The deployed model's own invoke base URL and whether it has a replica available,
        or None without one. One GetEndpoint. Raises BackendError when Vertex cannot be
        asked."""
        endpoint = self.steps.endpoint(deployment)
        found = deployed_by_release(endpoint).get(release_id) if endpoint is not None else None
        if found is None:
            return None
        return SlotInfo(release_id, self._slot_base(endpoint, release_id), serves(found))

    def deployed_releases(self, deployment: str) -> tuple[str, frozenset[int]] | None:
        """The id of the deployment's endpoint and the releases deployed on it (what live
        analysis reads), None without an endpoint. One GetEndpoint. Raises BackendError
        when Vertex cannot be asked."""
        endpoint = self.steps.endpoint(deployment)
        if endpoint is None:
            return None
        return endpoint.name.rsplit("/", 1)[-1], frozenset(deployed_by_release(endpoint))

    def monitoring(self) -> Any:
        """The Cloud Monitoring client live analysis reads. Raises BackendError without
        google-cloud-monitoring or credentials."""
        return monitoring_client(self.clients)

    def data_plane_url(self, deployment: str) -> str | None:
        """``<dedicated DNS>/v1/<endpoint>/invoke/v2/models/<deployment>/infer``: the slots'
        OIP route through the invoke API, split by the traffic split (calls carry a Google
        token). None before the endpoint exists: Vertex names its DNS when creating it."""
        endpoint = self.steps.endpoint(deployment)
        if endpoint is None or not endpoint.dedicated_endpoint_dns:
            return None
        base = f"{self.vx.dns_scheme}://{endpoint.dedicated_endpoint_dns}/v1/{endpoint.name}"
        return f"{base}/invoke/v2/models/{deployment}/infer"

    def slot_call(self, deployment: str, release_id: int) -> SlotCall:
        """How to call one deployed model directly: ``.../deployedModels/<id>/invoke/
        invocations`` on the endpoint's dedicated DNS (the slot's SageMaker-style route,
        which takes OIP infer and chat bodies) with a Google token read now. Raises
        BackendError without the deployed model or a token."""
        info = self.slot_info(deployment, release_id)
        if info is None:
            raise BackendError(f"{deployment} has no Vertex AI deployed model of {release_id}")
        fixed = {**bearer_token(self.clients.credentials), "Content-Type": "application/json"}
        return SlotCall(info.endpoint + SCORING_PATH, lambda body: fixed)

    def close(self) -> None:
        """Nothing to release (the GAPIC clients' channels close with the process).
        Idempotent."""

    # ----- steps -----

    def _ensure_model(self, deployment: str, release: Release, deadline: float) -> bool:
        """Upload the release's model unless bgserve's is there already; whether uploaded."""
        existing = self.steps.model(deployment, release.id)
        if existing is not None:
            self._refuse_other(deployment, release, existing)
            return False
        message = model_message(deployment, release, self.vx, self.slot_env)
        self.steps.upload_model(deployment, release.id, message, deadline)
        return True

    def _deploy(self, endpoint: str, deployment: str, release_id: int, deadline: float) -> None:
        model = self.steps.model_path(deployment, release_id)
        deployed = deployed_model_message(model, release_id, self.vx)
        future = self.steps.deploy(endpoint, deployed)
        try:
            self.steps.finish("deploy model", future, deadline)
        except ReadinessTimeout as exc:
            self.steps.cancel(future, self.clock() + self.ready_timeout)
            raise ReadinessTimeout(
                f"Vertex AI deploy of release {release_id} on {deployment} did not finish "
                f"within {self.ready_timeout:g}s (cancelled): see the endpoint's logs in "
                "Cloud Logging"
            ) from exc

    def _delete_model(self, deployment: str, release_id: int, deadline: float) -> None:
        model = self.steps.model(deployment, release_id)
        if model is not None and is_managed(model.labels):
            self.steps.delete_model(deployment, release_id, deadline)

    def _undo(self, deployment: str, release_id: int, made: list[str]) -> None:
        """Best effort: remove what a failed ``ensure_slot`` created; a failing step is
        logged, never raised (the original error is what the caller must see)."""
        deadline = self.clock() + self.ready_timeout
        try:
            endpoint = self.steps.endpoint(deployment)
            if endpoint is not None and release_id in deployed_by_release(endpoint):
                self.steps.undeploy(endpoint.name, str(release_id), deadline)
            if "model" in made:
                self.steps.delete_model(deployment, release_id, deadline)
            if "endpoint" in made:
                self.steps.delete_endpoint(deployment, deadline)
        except Exception as exc:
            log.error(
                "could not undo the slot of release %s on %s: %s", release_id, deployment, exc
            )

    # ----- reading and waiting -----

    def _endpoint(self, deployment: str, *, managed: bool = False) -> Any:
        """The endpoint, None when it does not exist. With ``managed``, raises BackendError
        for an endpoint bgserve did not create (no ``managed-by`` label)."""
        found = self.steps.endpoint(deployment)
        if found is not None and managed and not is_managed(found.labels):
            raise BackendError(
                f"Vertex AI endpoint {found.name} exists and is not managed by bgserve (no "
                f"label {MANAGED_BY[0]}={MANAGED_BY[1]}): bgserve changes only endpoints it "
                "created; deploy under another name or set BGSERVE_VERTEX_NAME_PREFIX"
            )
        return found

    def _refuse_other(self, deployment: str, release: Release, model: Any) -> None:
        wanted = slot_environment(deployment, release, self.slot_env)
        difference = "it is missing" if model is None else model_differs(model, wanted)
        if difference is not None:
            raise BackendError(
                f"Vertex AI model {self.steps.model_id(deployment, release.id)} is not release "
                f"{release.id}'s bundle ({difference}): it was made by someone else, or by "
                "another bgserve state under the same ids; delete it, or set "
                "BGSERVE_VERTEX_NAME_PREFIX to keep the two apart"
            )

    def _until_ready(self, deployment: str, release_id: int, deadline: float) -> SlotInfo:
        """The slot once its deployed model has a replica available. Raises BackendError
        when it is gone, ReadinessTimeout at ``deadline``."""
        while True:
            info = self.slot_info(deployment, release_id)
            if info is None:
                raise BackendError(f"release {release_id}'s deployed model left {deployment}")
            if info.ready:
                return info
            if self.clock() >= deadline:
                raise ReadinessTimeout(
                    f"Vertex AI deployed model of release {release_id} on {deployment} has no "
                    f"replica available after {self.ready_timeout:g}s"
                )
            self.sleep(self.vx.poll_seconds)

    def _slot_base(self, endpoint: Any, release_id: int) -> str:
        dns = f"{self.vx.dns_scheme}://{endpoint.dedicated_endpoint_dns}"
        return f"{dns}/v1/{endpoint.name}/deployedModels/{release_id}/invoke"

    @contextmanager
    def _lock(self, deployment: str) -> Iterator[None]:
        """One change of a deployment's endpoint at a time in this process."""
        with self._locks_guard:
            lock = self._locks.setdefault(deployment, threading.Lock())
        with lock:
            yield
