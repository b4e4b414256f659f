"""The SageMaker backend: a deployment is one real-time endpoint, a release one model and
one production variant on it, and the route the variants' weights.

- ``ensure_slot`` creates the release's model and adds its variant at weight 0 (a new
  endpoint config holding the live variants at their live weights, then UpdateEndpoint;
  the first release creates the endpoint), and waits until the variant serves.
- ``set_routes`` is one UpdateEndpointWeightsAndCapacities call: every variant's weight
  at once, applied without redeploying anything.
- ``retire_slot`` deploys a config without the variant (the last one takes its endpoint
  with it) and deletes the model and the configs nothing uses.

Endpoint configs never change on SageMaker, so each change of variants writes a new one
and deletes the old one once the endpoint has left it. SageMaker refuses a change while an
endpoint is updating: every write first waits for the endpoint to settle. Errors of the
AWS SDK become BackendError where they enter (:mod:`.aws`; ReadinessTimeout for a slot that
does not come up in time); throttling is retried by botocore's standard retry mode.
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
from bgserve.cloud.sagemaker import names
from bgserve.cloud.sagemaker.aws import aws_session, call, client, variant_signer
from bgserve.cloud.sagemaker.variants import (
    FAILED,
    MANAGED_BY,
    MANAGED_TAGS,
    SETTLED,
    UNROUTED_WEIGHT,
    config_keeping,
    model_differs,
    model_request,
    percents,
    takes_traffic,
    unchanged,
    variant_entry,
    variants,
    weights_request,
)
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.settings.cloud import SageMakerGroup

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class SageMakerBackend:
    """Slots as production variants of one SageMaker endpoint per deployment."""

    name = "sagemaker"

    def __init__(
        self,
        sm: SageMakerGroup,
        *,
        ready_timeout: float,
        slot_env: Mapping[str, str] | None = None,
        session: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``slot_env`` goes into every model's container environment; ``session`` is
        the boto3 session to use (default: one in the settings' region). Raises
        BackendError when the role or the image is not set, or boto3 is missing."""
        missing = [n for n, v in (("role_arn", sm.role_arn), ("image", sm.image)) if not v]
        if missing:
            raise BackendError(
                "the sagemaker backend needs "
                + " and ".join(f"BGSERVE_SAGEMAKER_{m.upper()}" for m in missing)
            )
        self.sm = sm
        self.ready_timeout = ready_timeout
        self.slot_env = dict(slot_env or {})
        self.session = session if session is not None else aws_session(sm.region)
        self.client = client(self.session, "sagemaker", sm.endpoint_url)
        self.clock, self.sleep = clock, sleep
        self._locks: dict[str, threading.Lock] = {}
        self._managed: set[str] = set()  # ARNs (endpoints, models) seen with bgserve's tag
        self._locks_guard = threading.Lock()

    # ----- the Backend protocol -----

    def ensure_slot(self, deployment: str, release: Release) -> SlotInfo:
        """Create the release's model and variant (weight 0; the first one creates the
        endpoint) and wait until it serves.

        Idempotent: an existing variant is only waited for. Never changes weights.
        Raises ReadinessTimeout when the variant does not serve within the ready timeout,
        BackendError when SageMaker refuses or reports the endpoint failed; what this call
        created (model, config, variant, endpoint) is then removed.
        """
        with self._lock(deployment):
            endpoint = self._describe_endpoint(deployment, managed=True)
            if endpoint is not None and release.id in variants(endpoint):
                return self._until_serving(deployment, release.id)
            model, created = self._ensure_model(deployment, release)
            try:
                self._add_variant(deployment, endpoint, release.id, model)
                return self._until_serving(deployment, release.id)
            except BaseException:
                self._undo_add(deployment, endpoint, release.id, model if created else None)
                raise

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        """Give every variant its route's weight (0 for one the routes leave out) in one
        UpdateEndpointWeightsAndCapacities call.

        Idempotent: weights already in place are not written again. Raises BackendError,
        leaving the weights as they were, for routes that do not sum to 100, name a
        release without a variant, or give more traffic to a variant that is not serving.
        """
        check_weights(deployment, routes, BackendError)
        with self._lock(deployment):
            endpoint = self._describe_endpoint(deployment, managed=True)
            found = variants(endpoint) if endpoint is not None else {}
            missing = sorted(r.release_id for r in routes if r.release_id not in found)
            if missing:
                raise BackendError(
                    f"{deployment} has no slot for release {', '.join(map(str, missing))} "
                    "on SageMaker: ensure its slot before routing to it"
                )
            current = percents(found)
            for route in routes:
                serving = found[route.release_id].serving
                if needs_availability(route, current[route.release_id]) and not serving:
                    raise BackendError(
                        f"release {route.release_id}'s variant of {deployment} is not serving "
                        f"(no instance in service): it cannot take {route.weight}%"
                    )
            weights = {r.release_id: r.weight for r in routes}
            if unchanged(found, weights):
                return
            self._until_settled(deployment)
            call(
                "UpdateEndpointWeightsAndCapacities",
                self.client.update_endpoint_weights_and_capacities,
                EndpointName=self._endpoint_name(deployment),
                DesiredWeightsAndCapacities=weights_request(found, weights),
            )
            self._until_settled(deployment)

    def retire_slot(self, deployment: str, release_id: int) -> None:
        """Remove the release's variant (the endpoint with it when it was the last one)
        and delete its model and the configs left unused.

        Idempotent: a variant or model that does not exist is not an error. Raises
        BackendError, deleting nothing, while the variant takes traffic.
        """
        with self._lock(deployment):
            endpoint = self._describe_endpoint(deployment, managed=True)
            found = variants(endpoint) if endpoint is not None else {}
            if endpoint is not None and release_id in found:
                refuse_retiring_routed(deployment, release_id, takes_traffic(release_id, found))
                if len(found) == 1 and len(endpoint.get("ProductionVariants") or []) == 1:
                    self._delete_endpoint(deployment, endpoint)
                else:
                    self._deploy_without(deployment, release_id)
            self._delete_model(names.model_name(self.sm.name_prefix, deployment, release_id))

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        """The variant's invocation URL and whether it serves, or None without a variant.
        One DescribeEndpoint call. Raises BackendError when SageMaker cannot be asked."""
        endpoint = self._describe_endpoint(deployment)
        if endpoint is None:
            return None
        variant = variants(endpoint).get(release_id)
        if variant is None:
            return None
        return SlotInfo(release_id, self._invocations(deployment), variant.serving)

    def data_plane_url(self, deployment: str) -> str | None:
        """The endpoint's invocation URL (``.../endpoints/<endpoint>/invocations``: calls
        need SigV4 signing, and ``X-Amzn-SageMaker-Target-Variant`` picks one variant).
        No side effects, no call."""
        return self._invocations(deployment)

    def slot_call(self, deployment: str, release_id: int) -> SlotCall:
        """How to call one variant directly: the endpoint's invocation URL with
        ``X-Amzn-SageMaker-Target-Variant`` naming it, each call SigV4-signed with the
        session's credentials. Raises BackendError without credentials."""
        url = self._invocations(deployment)
        region = self.client.meta.region_name
        variant = names.variant_name(release_id)
        return SlotCall(url, variant_signer(self.session, region, url, variant))

    def close(self) -> None:
        """Nothing to release (boto3 clients hold no open state bgserve owns). Idempotent."""

    # ----- for the traffic source -----

    def variant_names(self, deployment: str) -> tuple[str, dict[int, str]] | None:
        """The deployment's endpoint name and each release's variant name, None without
        an endpoint. One DescribeEndpoint call. Raises BackendError."""
        endpoint = self._describe_endpoint(deployment)
        if endpoint is None:
            return None
        found = {r: v.name for r, v in variants(endpoint).items()}
        return self._endpoint_name(deployment), found

    def cloudwatch(self) -> Any:
        """A CloudWatch client of the backend's session (``sagemaker_cloudwatch_url`` when
        set). Raises BackendError when boto3 cannot make one."""
        return client(self.session, "cloudwatch", self.sm.cloudwatch_url)

    # ----- endpoint changes -----

    def _add_variant(
        self, deployment: str, endpoint: Obj | None, release_id: int, model: str
    ) -> None:
        instances = self.sm.instance_count
        if endpoint is None:
            entry = variant_entry(model, release_id, UNROUTED_WEIGHT, instances, self.sm)
            config = self._create_config(deployment, [entry])
            call(
                "CreateEndpoint",
                self.client.create_endpoint,
                EndpointName=self._endpoint_name(deployment),
                EndpointConfigName=config,
                Tags=list(MANAGED_TAGS),
            )
            return
        endpoint = self._until_settled(deployment)
        current = self._describe_config(endpoint["EndpointConfigName"])
        kept = config_keeping(current, variants(endpoint))
        entry = variant_entry(model, release_id, 0.0, instances, self.sm)
        self._redeploy(deployment, endpoint, [*kept, entry])

    def _deploy_without(self, deployment: str, release_id: int) -> None:
        endpoint = self._until_settled(deployment)
        current = self._describe_config(endpoint["EndpointConfigName"])
        entries = config_keeping(current, variants(endpoint), drop=release_id)
        self._redeploy(deployment, endpoint, entries)

    def _redeploy(self, deployment: str, endpoint: Obj, entries: list[Obj]) -> None:
        """Deploy a new config of ``entries`` on the endpoint and delete the old config
        once the endpoint has left it (on failure the new config is deleted instead)."""
        old = endpoint["EndpointConfigName"]
        config = self._create_config(deployment, entries)
        try:
            call(
                "UpdateEndpoint",
                self.client.update_endpoint,
                EndpointName=self._endpoint_name(deployment),
                EndpointConfigName=config,
            )
            self._until_settled(deployment)
        except BaseException:
            self._delete_config_unless_used(deployment, config)
            raise
        self._delete_config(old)  # settled on the new config: nothing uses the old one

    def _undo_add(
        self, deployment: str, before: Obj | None, release_id: int, model: str | None
    ) -> None:
        """Best effort: put the endpoint back as ``before`` found it and delete what the
        failed ``ensure_slot`` created; a failing step is logged, never raised."""
        try:
            now = self._describe_endpoint(deployment)
            if before is None and now is not None:
                self._delete_endpoint(deployment, now)
            elif before is not None and now is not None and release_id in variants(now):
                self._deploy_without(deployment, release_id)
            if model is not None:
                self._delete_model(model)
        except Exception as exc:  # the original error is what the caller must see
            log.error(
                "could not undo the slot of release %s on %s: %s", release_id, deployment, exc
            )

    def _delete_endpoint(self, deployment: str, endpoint: Obj) -> None:
        call(
            "DeleteEndpoint",
            self.client.delete_endpoint,
            EndpointName=self._endpoint_name(deployment),
            missing_ok=True,
        )
        # Directly: on AWS a deleted endpoint still names its config while it is Deleting.
        self._delete_config(endpoint["EndpointConfigName"])

    def _create_config(self, deployment: str, entries: list[Obj]) -> str:
        name = names.config_name(self.sm.name_prefix, deployment, time.time_ns() // 1000)
        call(
            "CreateEndpointConfig",
            self.client.create_endpoint_config,
            EndpointConfigName=name,
            ProductionVariants=entries,
            Tags=list(MANAGED_TAGS),
        )
        return name

    def _delete_config_unless_used(self, deployment: str, config: str) -> None:
        endpoint = self._describe_endpoint(deployment)
        if endpoint is None or endpoint.get("EndpointConfigName") != config:
            self._delete_config(config)

    def _delete_config(self, config: str) -> None:
        call(
            "DeleteEndpointConfig",
            self.client.delete_endpoint_config,
            EndpointConfigName=config,
            missing_ok=True,
        )

    # ----- models -----

    def _ensure_model(self, deployment: str, release: Release) -> tuple[str, bool]:
        """The release's model, created unless it exists; True when created here.

        An existing model is used only if bgserve made it (its ``managed-by`` tag) for this
        very bundle; else BackendError, naming the difference and the way out.
        """
        name = names.model_name(self.sm.name_prefix, deployment, release.id)
        request = model_request(name, deployment, release, self.sm, self.slot_env)
        found = call("DescribeModel", self.client.describe_model, ModelName=name, missing_ok=True)
        if found is None:
            call("CreateModel", self.client.create_model, **request)
            return name, True
        if not self._tagged_managed(found["ModelArn"]):
            difference: str | None = f"no tag {MANAGED_BY[0]}={MANAGED_BY[1]}"
        else:
            difference = model_differs(found, request)
        if difference is not None:
            raise BackendError(
                f"SageMaker model {name} exists but is not release {release.id}'s bundle "
                f"({difference}): it was made by someone else, or by another bgserve state "
                "under the same names; delete that model, or set "
                "BGSERVE_SAGEMAKER_NAME_PREFIX to keep the two apart"
            )
        return name, False

    def _delete_model(self, model: str) -> None:
        call("DeleteModel", self.client.delete_model, ModelName=model, missing_ok=True)

    # ----- reading and waiting -----

    def _describe_endpoint(self, deployment: str, *, managed: bool = False) -> Obj | None:
        """The endpoint's description, None when it does not exist. With ``managed``,
        raises BackendError for an endpoint bgserve did not create (no ``managed-by``
        tag): bgserve changes only its own."""
        name = self._endpoint_name(deployment)
        found: Obj | None = call(
            "DescribeEndpoint", self.client.describe_endpoint, EndpointName=name, missing_ok=True
        )
        if found is not None and managed:
            self._refuse_unmanaged(name, found["EndpointArn"])
        return found

    def _tagged_managed(self, arn: str) -> bool:
        """Whether the resource at ``arn`` carries bgserve's ``managed-by`` tag."""
        if arn in self._managed:
            return True
        answer = call("ListTags", self.client.list_tags, ResourceArn=arn)
        tags = {t.get("Key"): t.get("Value") for t in answer.get("Tags") or []}
        if tags.get(MANAGED_BY[0]) != MANAGED_BY[1]:
            return False
        self._managed.add(arn)
        return True

    def _refuse_unmanaged(self, name: str, arn: str) -> None:
        if not self._tagged_managed(arn):
            raise BackendError(
                f"SageMaker endpoint {name} exists and is not managed by bgserve (no tag "
                f"{MANAGED_BY[0]}={MANAGED_BY[1]}): bgserve changes only endpoints it created; "
                "deploy under another name or set BGSERVE_SAGEMAKER_NAME_PREFIX"
            )

    def _describe_config(self, config: str) -> Obj:
        found: Obj = call(
            "DescribeEndpointConfig",
            self.client.describe_endpoint_config,
            EndpointConfigName=config,
        )
        return found

    def _until_settled(self, deployment: str) -> Obj:
        """The endpoint once it accepts a change (InService). Raises BackendError when it
        is gone or failed, ReadinessTimeout after the ready timeout."""

        def settled(endpoint: Obj) -> bool:
            return endpoint.get("EndpointStatus") in SETTLED

        return self._until(deployment, settled, "to settle (InService)")

    def _until_serving(self, deployment: str, release_id: int) -> SlotInfo:
        def serving(endpoint: Obj) -> bool:
            variant = variants(endpoint).get(release_id)
            if variant is None and endpoint.get("EndpointStatus") in SETTLED:
                raise BackendError(
                    f"release {release_id}'s variant left {deployment} while it was starting"
                )
            return variant is not None and variant.serving

        self._until(deployment, serving, f"to serve release {release_id}")
        return SlotInfo(release_id, self._invocations(deployment), True)

    def _until(self, deployment: str, done: Callable[[Obj], bool], what: str) -> Obj:
        deadline = self.clock() + self.ready_timeout
        while True:
            endpoint = self._describe_endpoint(deployment)
            if endpoint is None:
                raise BackendError(f"SageMaker endpoint of {deployment} disappeared")
            status = endpoint.get("EndpointStatus")
            if status in FAILED:
                reason = endpoint.get("FailureReason") or "no reason given"
                raise BackendError(f"SageMaker endpoint of {deployment} is {status}: {reason}")
            if done(endpoint):
                return endpoint
            if self.clock() >= deadline:
                raise ReadinessTimeout(
                    f"SageMaker endpoint of {deployment} did not come {what} within "
                    f"{self.ready_timeout:g}s (status {status})"
                )
            self.sleep(self.sm.poll_seconds)

    # ----- names, locks and errors -----

    def _endpoint_name(self, deployment: str) -> str:
        return names.endpoint_name(self.sm.name_prefix, deployment)

    @functools.cached_property
    def runtime_url(self) -> str:
        """The SageMaker runtime's base URL, as botocore resolves it for the region (made
        on first use: only calls of slots need it)."""
        runtime = client(self.session, "sagemaker-runtime", self.sm.runtime_url)
        return str(runtime.meta.endpoint_url).rstrip("/")

    def _invocations(self, deployment: str) -> str:
        return f"{self.runtime_url}/endpoints/{self._endpoint_name(deployment)}/invocations"

    @contextmanager
    def _lock(self, deployment: str) -> Iterator[None]:
        """One change of a deployment's endpoint at a time in this process (SageMaker
        refuses a second while the first is updating)."""
        with self._locks_guard:
            lock = self._locks.setdefault(deployment, threading.Lock())
        with lock:
            yield
