"""The Databricks backend: a deployment is one Model Serving endpoint, a release one served
entity of its config (the bundle's MLflow model version), and the route the config's
``traffic_config``.

- ``ensure_slot`` creates the endpoint with the release's entity (the first release), or
  updates the endpoint's config to add it at 0%, and waits with the SDK's waiter until the
  update is done (``state.config_update`` NOT_UPDATING; UPDATE_FAILED raises).
- ``set_routes`` is one config update: the same entities, the new traffic config.
- ``retire_slot`` updates the config without the entity; the last one takes its endpoint.

Databricks refuses a config update while another is in progress (409 RESOURCE_CONFLICT):
each write is tried again until the ready timeout. A failed update leaves the endpoint
serving its previous config, so a failed stage leaves nothing behind on its own; a first
slot's failed endpoint is deleted. Throttling (429 REQUEST_LIMIT_EXCEEDED) is retried by
the SDK after Retry-After. Errors of the SDK become bgserve's where they enter
(:mod:`.workspace`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from bgserve.backends.base import SlotCall, SlotInfo
from bgserve.backends.routes import check_weights, needs_availability, refuse_retiring_routed
from bgserve.cloud.databricks import entities as ent
from bgserve.cloud.databricks import names
from bgserve.cloud.databricks.adapter import SECRET_HEADER, InvocationAdapter
from bgserve.cloud.databricks.workspace import EndpointBusy, call, workspace_client
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError
from bgserve.settings.cloud import DatabricksGroup

log = logging.getLogger(__name__)


class DatabricksBackend:
    """Slots as served entities of one Databricks serving endpoint per deployment."""

    name = "databricks"

    def __init__(
        self,
        group: DatabricksGroup,
        *,
        ready_timeout: float,
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``client`` is the WorkspaceClient to use (default: the settings' workspace with
        the SDK's unified authentication). Raises BackendError without the SDK or a
        workspace."""
        self.group = group
        self.ready_timeout = ready_timeout
        self.client = client if client is not None else workspace_client(group)
        self.clock, self.sleep = clock, sleep
        self.adapter = InvocationAdapter(self.client)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ----- the Backend protocol -----

    def ensure_slot(self, deployment: str, release: Release) -> SlotInfo:
        """Serve the release as an entity of the deployment's endpoint with no traffic (the
        first one creates the endpoint, where Databricks gives a lone entity all traffic)
        and wait until the config update is done.

        Idempotent: an existing entity of this release is only waited for. Never changes
        the weights of other entities. Raises ReadinessTimeout when the update does not
        finish within the ready timeout, BackendError when Databricks refuses it or it
        fails (the endpoint then keeps its previous config; a first slot's endpoint is
        deleted).
        """
        deadline = self.clock() + self.ready_timeout
        with self._lock(deployment):
            endpoint = self._endpoint(deployment, managed=True)
            if endpoint is not None and ent.is_updating(endpoint):
                endpoint = self._settled(deployment, deadline)
            existing = ent.entities(endpoint).get(release.id) if endpoint else None
            if existing is not None:
                self._refuse_other(deployment, release, existing)
                return self._slot(deployment, release.id, existing)
            try:
                if endpoint is None:
                    self._create(deployment, release, deadline)
                else:
                    self._add(deployment, endpoint, release, deadline)
            except BaseException:
                self._undo(deployment, release.id, created=endpoint is None)
                raise
            info = self.slot_info(deployment, release.id)
            if info is None or not info.ready:
                raise BackendError(f"release {release.id}'s entity on {deployment} is not ready")
            return info

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        """Set the endpoint's traffic config to the routes' percents (an entity the routes
        leave out gets 0) in one config update.

        Idempotent: a traffic config already in place is not written again. Raises
        BackendError, leaving the traffic as it was, for routes that do not sum to 100,
        name a release without an entity, or give more traffic to an entity that is not
        ready.
        """
        check_weights(deployment, routes, BackendError)
        deadline = self.clock() + self.ready_timeout
        with self._lock(deployment):
            endpoint = self._endpoint(deployment, managed=True)
            found = ent.entities(endpoint) if endpoint is not None else {}
            missing = sorted(r.release_id for r in routes if r.release_id not in found)
            if missing:
                raise BackendError(
                    f"{deployment} has no slot for release {', '.join(map(str, missing))} "
                    "on Databricks: ensure its slot before routing to it"
                )
            current = ent.routed(endpoint)
            for route in routes:
                grows = needs_availability(route, current.get(route.release_id, 0))
                if grows and not ent.is_ready(found[route.release_id]):
                    raise BackendError(
                        f"release {route.release_id}'s entity on {deployment} is not ready "
                        f"({ent.state_of(found[route.release_id])}): it cannot take "
                        f"{route.weight}%"
                    )
            wanted = {r: 0 for r in found} | {r.release_id: r.weight for r in routes}
            if wanted == {r: current.get(r, 0) for r in found}:
                return
            self._update(deployment, list(found.values()), wanted, deadline)

    def retire_slot(self, deployment: str, release_id: int) -> None:
        """Remove the release's entity from the endpoint's config (the endpoint with it
        when it was the last one).

        Idempotent: an entity or endpoint that does not exist is not an error. Raises
        BackendError, changing nothing, while the entity has traffic.
        """
        deadline = self.clock() + self.ready_timeout
        with self._lock(deployment):
            endpoint = self._endpoint(deployment, managed=True)
            if endpoint is not None and ent.is_updating(endpoint):
                endpoint = self._settled(deployment, deadline)
            found = ent.entities(endpoint) if endpoint is not None else {}
            if release_id not in found:
                return
            current = ent.routed(endpoint)
            refuse_retiring_routed(deployment, release_id, current.get(release_id, 0))
            kept = {r: e for r, e in found.items() if r != release_id}
            if not kept:
                self._delete(deployment)
                return
            weights = {r: current.get(r, 0) for r in kept}
            self._update(deployment, list(kept.values()), weights, deadline)

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        """The entity's own invocation URL and whether its deployment is ready, or None
        without one in the endpoint's current config. One GET. Raises BackendError when
        Databricks cannot be asked."""
        endpoint = self._endpoint(deployment)
        found = ent.entities(endpoint).get(release_id) if endpoint is not None else None
        return None if found is None else self._slot(deployment, release_id, found)

    def data_plane_url(self, deployment: str) -> str | None:
        """The endpoint's invocations URL (``<host>/serving-endpoints/<name>/invocations``:
        calls carry a workspace token and MLflow's scoring formats, e.g.
        ``dataframe_records``; the traffic config picks the entity). No calls."""
        return f"{self._host}/serving-endpoints/{self._endpoint_name(deployment)}/invocations"

    def slot_call(self, deployment: str, release_id: int) -> SlotCall:
        """How to call one entity directly: a loopback adapter that takes OIP v2 infer
        bodies and calls the entity's own invocations route through the SDK (its token,
        its retries) as a ``dataframe_split``. Raises BackendError without an endpoint."""
        endpoint = self._endpoint(deployment)
        if endpoint is None:
            raise BackendError(f"{deployment} has no Databricks serving endpoint to call yet")
        path = self._entity_path(deployment, release_id)
        headers = {"Content-Type": "application/json", SECRET_HEADER: self.adapter.secret}
        return SlotCall(self.adapter.url_for(path), lambda body: headers)

    def close(self) -> None:
        """Stop the loopback adapter (started by the first ``slot_call``). Idempotent."""
        self.adapter.close()

    # ----- changes -----

    def _create(self, deployment: str, release: Release, deadline: float) -> None:
        from databricks.sdk.service.serving import EndpointCoreConfigInput

        name = self._endpoint_name(deployment)
        config = EndpointCoreConfigInput(
            name=name,
            served_entities=[ent.served_entity(release, self.group)],
            traffic_config=ent.traffic_config({release.id: 100}),
        )
        create = self.client.serving_endpoints.create
        waiter = self._write(
            "create endpoint", deadline, create, name, config=config, tags=ent.managed_tags()
        )
        self._wait("create endpoint", waiter, deadline)

    def _add(self, deployment: str, endpoint: Any, release: Release, deadline: float) -> None:
        kept = list(ent.entities(endpoint).values())
        weights = {r: ent.routed(endpoint).get(r, 0) for r in ent.entities(endpoint)}
        self._update(
            deployment, kept, {**weights, release.id: 0}, deadline,
            added=ent.served_entity(release, self.group),
        )  # fmt: skip

    def _update(
        self,
        deployment: str,
        kept: Sequence[Any],
        weights: Mapping[int, int],
        deadline: float,
        added: Any = None,
    ) -> None:
        """One config update: the ``kept`` entities (and ``added``), ``weights`` as the
        traffic config; waits until Databricks finished it."""
        served = ent.as_inputs(kept) + ([added] if added is not None else [])
        update = self.client.serving_endpoints.update_config
        waiter = self._write(
            "update config", deadline, update, self._endpoint_name(deployment),
            served_entities=served, traffic_config=ent.traffic_config(weights),
        )  # fmt: skip
        self._wait("update config", waiter, deadline)

    def _delete(self, deployment: str) -> None:
        delete = self.client.serving_endpoints.delete
        call("delete endpoint", delete, self._endpoint_name(deployment), missing_ok=True)

    def _write(self, operation: str, deadline: float, method: Callable[..., Any],
               *args: Any, **kw: Any) -> Any:  # fmt: skip
        """``method`` until Databricks takes it: a 409 (another update in progress) is
        tried again every poll interval until ``deadline``, then raised."""
        while True:
            try:
                return call(operation, method, *args, **kw)
            except EndpointBusy:
                if self.clock() + self.group.poll_seconds >= deadline:
                    raise
                self.sleep(self.group.poll_seconds)

    def _wait(self, operation: str, waiter: Any, deadline: float) -> Any:
        """The SDK's waiter until the update is done, at most until ``deadline``; its
        failure names the entities that failed and Databricks' message about each."""
        remaining = timedelta(seconds=max(deadline - self.clock(), 0.001))
        polled: list[Any] = []
        try:
            return call(operation, waiter.result, timeout=remaining, callback=polled.append)
        except BackendError as exc:
            why = ent.pending_failures(polled[-1]) if polled else ""
            if not why:
                raise
            raise type(exc)(f"{exc.message} ({why}; see the entity's build logs)") from exc

    def _settled(self, deployment: str, deadline: float) -> Any:
        """The endpoint once an update in progress (another caller's) is done."""
        wait = self.client.serving_endpoints.wait_get_serving_endpoint_not_updating
        name = self._endpoint_name(deployment)
        remaining = timedelta(seconds=max(deadline - self.clock(), 0.001))
        return call("wait for the endpoint", wait, name, timeout=remaining)

    def _undo(self, deployment: str, release_id: int, *, created: bool) -> None:
        """Best effort: delete the endpoint a failed first slot created, or take a staged
        entity out again when its update outlasted the timeout; logged, never raised (the
        original error is what the caller must see)."""
        try:
            if created:
                self._delete(deployment)
                return
            endpoint = self._endpoint(deployment)
            if endpoint is not None and release_id in ent.entities(endpoint):
                kept = {r: e for r, e in ent.entities(endpoint).items() if r != release_id}
                weights = {r: ent.routed(endpoint).get(r, 0) for r in kept}
                self._update(deployment, list(kept.values()), weights, self.clock() + 1)
        except Exception as exc:
            log.error(
                "could not undo the slot of release %s on %s: %s", release_id, deployment, exc
            )

    # ----- reading -----

    def _endpoint(self, deployment: str, *, managed: bool = False) -> Any:
        """The endpoint, None when it does not exist. With ``managed``, raises BackendError
        for an endpoint bgserve did not create (no ``managed-by`` tag)."""
        name = self._endpoint_name(deployment)
        found = call("get endpoint", self.client.serving_endpoints.get, name, missing_ok=True)
        if found is not None and managed and not ent.is_managed(found):
            raise BackendError(
                f"Databricks serving endpoint {name} exists and is not managed by bgserve (no "
                f"tag {ent.MANAGED_BY[0]}={ent.MANAGED_BY[1]}): bgserve changes only endpoints "
                "it created; deploy under another name or set BGSERVE_DATABRICKS_NAME_PREFIX"
            )
        return found

    def _slot(self, deployment: str, release_id: int, entity: Any) -> SlotInfo:
        url = f"{self._host}{self._entity_path(deployment, release_id)}"
        return SlotInfo(release_id, url, ent.is_ready(entity))

    def _refuse_other(self, deployment: str, release: Release, existing: Any) -> None:
        difference = ent.entity_differs(existing, release)
        if difference is not None:
            raise BackendError(
                f"served entity {existing.name} of {self._endpoint_name(deployment)} is not "
                f"release {release.id}'s bundle ({difference}): another bgserve state made it "
                "under the same names; retire it, or set BGSERVE_DATABRICKS_NAME_PREFIX"
            )

    # ----- names and locks -----

    def _endpoint_name(self, deployment: str) -> str:
        return names.endpoint_name(self.group.name_prefix, deployment)

    def _entity_path(self, deployment: str, release_id: int) -> str:
        endpoint, entity = self._endpoint_name(deployment), names.entity_name(release_id)
        return f"/serving-endpoints/{endpoint}/served-models/{entity}/invocations"

    @property
    def _host(self) -> str:
        return str(self.client.config.host).rstrip("/")

    @contextmanager
    def _lock(self, deployment: str) -> Iterator[None]:
        """One change of a deployment's endpoint at a time in this process (Databricks
        refuses a second update while the first is in progress)."""
        with self._locks_guard:
            lock = self._locks.setdefault(deployment, threading.Lock())
        with lock:
            yield
