"""The Azure ML backend: a deployment is one managed online endpoint, a release one
managed online deployment on it, and the route the endpoint's traffic map.

- ``ensure_slot`` creates the endpoint (the first release) and the release's deployment,
  with no traffic, and waits until its provisioning succeeded (Azure reports Succeeded once
  the container's readiness route answers).
- ``set_routes`` is one update of the endpoint's ``traffic``: every deployment's percent at
  once, applied by Azure without redeploying anything.
- ``retire_slot`` deletes the release's deployment (Azure refuses while it has traffic);
  the last one takes its endpoint with it.

Azure refuses a change with 409 while another operation on the endpoint runs: each write
is retried until the ready timeout. Throttling (429) is retried by azure-core's retry
policy, after the Retry-After Azure sends. Errors of the SDK become BackendError where they
enter (:mod:`.azure`; ReadinessTimeout for a slot that does not come up in time).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from bgserve.backends.base import SlotCall, SlotInfo
from bgserve.backends.routes import check_weights, needs_availability, refuse_retiring_routed
from bgserve.cloud.azureml import names
from bgserve.cloud.azureml.azure import EndpointBusy, call, ml_client, wait
from bgserve.cloud.azureml.deployments import (
    DEPLOYMENT_HEADER,
    FAILED,
    MANAGED_BY,
    READY,
    SERVING,
    deployment_differs,
    deployment_entity,
    endpoint_entity,
    is_managed,
    routed,
    slot_environment,
    traffic_map,
)
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.settings.cloud import AzureMLGroup

log = logging.getLogger(__name__)


class AzureMLBackend:
    """Slots as managed online deployments of one Azure ML endpoint per deployment."""

    name = "azureml"

    def __init__(
        self,
        az: AzureMLGroup,
        *,
        ready_timeout: float,
        slot_env: Mapping[str, str] | None = None,
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``slot_env`` goes into every deployment's container environment; ``client`` is
        the MLClient to use (default: one of the settings' workspace with azure-identity's
        credential). Raises BackendError without an image, a workspace or the SDK."""
        if not az.image:
            raise BackendError("the azureml backend needs BGSERVE_AZUREML_IMAGE")
        self.az = az
        self.ready_timeout = ready_timeout
        self.slot_env = dict(slot_env or {})
        self.client = client if client is not None else ml_client(az)
        self.clock, self.sleep = clock, sleep
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ----- the Backend protocol -----

    def ensure_slot(self, deployment: str, release: Release) -> SlotInfo:
        """Create the release's online deployment with no traffic (the first one creates
        the endpoint) and wait until its provisioning succeeded.

        Idempotent: an existing deployment of this release is only waited for. Never
        changes traffic. Raises ReadinessTimeout when it does not succeed within the ready
        timeout, BackendError when Azure refuses or the provisioning fails; what this call
        created (deployment, endpoint) is then deleted.
        """
        deadline = self.clock() + self.ready_timeout
        with self._lock(deployment):
            endpoint = self._endpoint(deployment, managed=True)
            if endpoint is not None:
                existing = self._deployment(deployment, release.id)
                if existing is not None:
                    self._refuse_other(deployment, release, existing)
                    return self._until_ready(deployment, release.id, deadline)
            try:
                if endpoint is None:
                    self._write("create endpoint", deadline, self._begin_endpoint, deployment)
                entity = deployment_entity(
                    self._endpoint_name(deployment), deployment, release, self.az, self.slot_env
                )
                begin = self.client.online_deployments.begin_create_or_update
                self._write("create deployment", deadline, begin, entity)
                return self._until_ready(deployment, release.id, deadline)
            except BaseException:
                self._undo(deployment, release.id, endpoint_created=endpoint is None)
                raise

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        """Set the endpoint's traffic map to the routes' percents (a release the routes
        leave out gets none) in one endpoint update.

        Idempotent: a traffic map already in place is not written again. Raises
        BackendError, leaving the traffic as it was, for routes that do not sum to 100, name
        a release without a deployment, or give more traffic to a deployment that is not
        serving (provisioning neither Succeeded nor Updating).
        """
        check_weights(deployment, routes, BackendError)
        deadline = self.clock() + self.ready_timeout
        with self._lock(deployment):
            endpoint = self._endpoint(deployment, managed=True)
            found = self._deployments(deployment) if endpoint is not None else {}
            missing = sorted(r.release_id for r in routes if r.release_id not in found)
            if missing:
                raise BackendError(
                    f"{deployment} has no slot for release {', '.join(map(str, missing))} "
                    "on Azure ML: ensure its slot before routing to it"
                )
            current = routed(endpoint.traffic)
            for route in routes:
                state = found[route.release_id].provisioning_state
                grows = needs_availability(route, current.get(route.release_id, 0))
                if grows and state not in SERVING:
                    raise BackendError(
                        f"release {route.release_id}'s deployment on {deployment} is not "
                        f"serving (provisioning state {state}): it cannot take {route.weight}%"
                    )
            wanted = traffic_map({r.release_id: r.weight for r in routes})
            if wanted == {n: p for n, p in (endpoint.traffic or {}).items() if p}:
                return
            endpoint.traffic = wanted
            begin = self.client.online_endpoints.begin_create_or_update
            self._write("update endpoint traffic", deadline, begin, endpoint)

    def retire_slot(self, deployment: str, release_id: int) -> None:
        """Delete the release's online deployment (its endpoint with it when it was the
        last one).

        Idempotent: a deployment or endpoint that does not exist is not an error. Raises
        BackendError, deleting nothing, while the deployment has traffic.
        """
        deadline = self.clock() + self.ready_timeout
        with self._lock(deployment):
            endpoint = self._endpoint(deployment, managed=True)
            if endpoint is None:
                return
            if self._deployment(deployment, release_id) is not None:
                percent = routed(endpoint.traffic).get(release_id, 0)
                refuse_retiring_routed(deployment, release_id, percent)
                self._delete_deployment(deployment, release_id, deadline)
            if not self._deployments(deployment, every=True):
                self._delete_endpoint(deployment, deadline)

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        """The endpoint's scoring URI and whether the release's deployment serves, or None
        without one. Two GET calls. Raises BackendError when Azure cannot be asked."""
        endpoint = self._endpoint(deployment)
        if endpoint is None:
            return None
        found = self._deployment(deployment, release_id)
        if found is None:
            return None
        return SlotInfo(release_id, endpoint.scoring_uri, found.provisioning_state in SERVING)

    def data_plane_url(self, deployment: str) -> str | None:
        """The endpoint's scoring URI (``https://<endpoint>.<region>.inference.ml.azure.com
        /score``: calls carry the endpoint's key; ``azureml-model-deployment`` picks one
        deployment); before the endpoint exists, the URI Azure gives it. No side effects."""
        endpoint = self._endpoint(deployment)
        if endpoint is not None and endpoint.scoring_uri:
            return str(endpoint.scoring_uri)
        name = self._endpoint_name(deployment)
        return f"https://{name}.{self.location}.inference.ml.azure.com/score"

    def slot_call(self, deployment: str, release_id: int) -> SlotCall:
        """How to call one deployment directly: the endpoint's scoring URI with the
        ``azureml-model-deployment`` header naming it and the endpoint's primary key (read
        now with ListKeys, never stored). Raises BackendError without an endpoint or keys."""
        endpoint = self._endpoint(deployment)
        if endpoint is None or not endpoint.scoring_uri:
            raise BackendError(f"{deployment} has no Azure ML endpoint to call yet")
        keys = call("list keys", self.client.online_endpoints.get_keys, endpoint.name)
        fixed = {
            "Authorization": f"Bearer {keys.primary_key}",
            DEPLOYMENT_HEADER: names.deployment_name(release_id),
            "Content-Type": "application/json",
        }
        return SlotCall(str(endpoint.scoring_uri), lambda body: fixed)

    def close(self) -> None:
        """Nothing to release (the SDK's pipelines hold no state bgserve owns). Idempotent."""

    # ----- changes -----

    def _begin_endpoint(self, deployment: str) -> Any:
        entity = endpoint_entity(self._endpoint_name(deployment))
        return self.client.online_endpoints.begin_create_or_update(entity)

    def _write(self, operation: str, deadline: float, begin: Callable[..., Any], *args: Any) -> Any:
        """Start a long-running operation and wait for it until ``deadline``, starting it
        again while Azure refuses it as busy (409: another operation runs)."""
        while True:
            try:
                poller = call(operation, begin, *args)
                return wait(operation, poller, max(deadline - self.clock(), 0.0))
            except EndpointBusy:
                if self.clock() >= deadline:
                    raise
                self.sleep(self.az.poll_seconds)

    def _delete_deployment(self, deployment: str, release_id: int, deadline: float) -> None:
        begin = self.client.online_deployments.begin_delete
        name, endpoint = names.deployment_name(release_id), self._endpoint_name(deployment)
        try:
            self._write("delete deployment", deadline, begin, name, endpoint)
        except BackendError:
            if self._deployment(deployment, release_id) is not None:
                raise

    def _delete_endpoint(self, deployment: str, deadline: float) -> None:
        begin = self.client.online_endpoints.begin_delete
        try:
            self._write("delete endpoint", deadline, begin, self._endpoint_name(deployment))
        except BackendError:
            if self._endpoint(deployment) is not None:
                raise

    def _undo(self, deployment: str, release_id: int, *, endpoint_created: bool) -> None:
        """Best effort: delete what a failed ``ensure_slot`` created; a failing step is
        logged, never raised (the original error is what the caller must see)."""
        deadline = self.clock() + self.ready_timeout
        try:
            self._delete_deployment(deployment, release_id, deadline)
            if endpoint_created:
                self._delete_endpoint(deployment, deadline)
        except Exception as exc:
            log.error(
                "could not undo the slot of release %s on %s: %s", release_id, deployment, exc
            )

    # ----- reading and waiting -----

    def _endpoint(self, deployment: str, *, managed: bool = False) -> Any:
        """The endpoint entity, None when it does not exist. With ``managed``, raises
        BackendError for an endpoint bgserve did not create (no ``managed-by`` tag)."""
        name = self._endpoint_name(deployment)
        found = call("get endpoint", self.client.online_endpoints.get, name, missing_ok=True)
        if found is not None and managed and not is_managed(found.tags):
            raise BackendError(
                f"Azure ML endpoint {name} exists and is not managed by bgserve (no tag "
                f"{MANAGED_BY[0]}={MANAGED_BY[1]}): bgserve changes only endpoints it created; "
                "deploy under another name or set BGSERVE_AZUREML_NAME_PREFIX"
            )
        return found

    def _deployment(self, deployment: str, release_id: int) -> Any:
        get = self.client.online_deployments.get
        name, endpoint = names.deployment_name(release_id), self._endpoint_name(deployment)
        return call("get deployment", get, name, endpoint, missing_ok=True)

    def _deployments(self, deployment: str, *, every: bool = False) -> dict[Any, Any]:
        """bgserve's deployments on the endpoint by release id (``every``: all of them by
        name, a user's too)."""
        listed = call(
            "list deployments", self.client.online_deployments.list, self._endpoint_name(deployment)
        )
        found = {}
        for item in call("list deployments", list, listed):
            release_id = names.release_of_deployment(item.name)
            if every or release_id is not None:
                found[item.name if every else release_id] = item
        return found

    def _refuse_other(self, deployment: str, release: Release, existing: Any) -> None:
        wanted = slot_environment(deployment, release, self.slot_env)
        difference = deployment_differs(existing, wanted)
        if difference is not None:
            raise BackendError(
                f"Azure ML deployment {existing.name} of {self._endpoint_name(deployment)} "
                f"exists but is not release {release.id}'s bundle ({difference}): it was made "
                "by someone else, or by another bgserve state under the same names; delete "
                "it, or set BGSERVE_AZUREML_NAME_PREFIX to keep the two apart"
            )

    def _until_ready(self, deployment: str, release_id: int, deadline: float) -> SlotInfo:
        """The slot once its deployment's provisioning succeeded. Raises BackendError when
        it failed or is gone, ReadinessTimeout at ``deadline``."""
        while True:
            found = self._deployment(deployment, release_id)
            if found is None:
                raise BackendError(f"release {release_id}'s deployment left {deployment}")
            state = found.provisioning_state
            if state == READY:
                return SlotInfo(release_id, self._endpoint(deployment).scoring_uri, True)
            if state in FAILED:
                raise BackendError(
                    f"Azure ML deployment {found.name} of {deployment} is {state}: "
                    "see its logs (az ml online-deployment get-logs)"
                )
            if self.clock() >= deadline:
                raise ReadinessTimeout(
                    f"Azure ML deployment of release {release_id} on {deployment} did not "
                    f"succeed within {self.ready_timeout:g}s (provisioning state {state})"
                )
            self.sleep(self.az.poll_seconds)

    # ----- names and locks -----

    def _endpoint_name(self, deployment: str) -> str:
        return names.endpoint_name(self.az.name_prefix, deployment)

    def endpoint_id(self, deployment: str) -> str:
        """The ARM id of ``deployment``'s online endpoint (what Azure Monitor's metrics are
        read of)."""
        az = self.az
        workspace = (
            f"/subscriptions/{az.subscription_id}/resourceGroups/{az.resource_group}"
            f"/providers/Microsoft.MachineLearningServices/workspaces/{az.workspace}"
        )
        return f"{workspace}/onlineEndpoints/{self._endpoint_name(deployment)}"

    def monitor(self) -> Any:
        """A ``MetricsQueryClient`` with the MLClient's credential and transport, for live
        analysis. Raises BackendError without azure-monitor-query."""
        from bgserve.cloud.azureml.metrics import metrics_client

        # MLClient keeps its credential and pipeline keywords (a test's transport) only
        # privately; the metrics client must use the same identity and pipeline.
        kwargs = getattr(self.client, "_kwargs", None) or {}
        passed = {k: kwargs[k] for k in ("transport",) if k in kwargs}
        return metrics_client(self.client._credential, **passed)

    @functools.cached_property
    def location(self) -> str:
        """The workspace's region (read once: only scoring URIs of endpoints not yet
        created need it)."""
        workspace = call("get workspace", self.client.workspaces.get, self.az.workspace)
        return str(workspace.location)

    @contextmanager
    def _lock(self, deployment: str) -> Iterator[None]:
        """One change of a deployment's endpoint at a time in this process (Azure refuses a
        second while the first runs)."""
        with self._locks_guard:
            lock = self._locks.setdefault(deployment, threading.Lock())
        with lock:
            yield
