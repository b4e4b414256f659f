"""The KServe backend: one InferenceService per release, one weighted route per deployment.

Each slot is an InferenceService (``serving.kserve.io/v1beta1``) whose custom
predictor container runs ``bgserve slot`` on the release's bundle. Traffic is split
between slots by a Gateway API HTTPRoute (default) or an Istio VirtualService
(``BGSERVE_KSERVE_ROUTER=istio``), never by ``canaryTrafficPercent``: that splits
revisions of a single InferenceService, is ignored in RawDeployment/Standard mode,
and cannot hold two distinct model+prompt releases side by side.

With ``BGSERVE_KSERVE_LLM_MODE=llminferenceservice`` an LLM release's slot is an
LLMInferenceService instead, a member of the deployment's KServe routing group whose
weight carries the split (:mod:`~bgserve.kube.kserve.llm_group`); such a deployment has no
route of bgserve's, and its releases must all be LLMs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kubernetes import client

from bgserve.backends.base import Backend, ShadowBatch, SlotInfo, check_shadow
from bgserve.backends.routes import check_weights, needs_availability, refuse_retiring_routed
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, BgserveError, Conflict
from bgserve.kube.base import KubeBackend
from bgserve.kube.client import (
    Obj,
    is_managed,
    is_ready,
    managed_labels,
    observed_current,
)
from bgserve.kube.kserve.llm_group import LlmGroup
from bgserve.kube.kserve.llm_isvc import LLM_INFERENCE_SERVICE, llmisvc_name
from bgserve.kube.kserve.llm_objects import (
    LlmServing,
    llm_inference_service,
    llm_weighted_route,
)
from bgserve.kube.kserve.objects import (
    INFERENCE_SERVICE,
    ROUTERS,
    inference_service,
    isvc_name,
    predictor_host,
    route_name,
    routed_weight,
    weighted_route,
)
from bgserve.kube.mirror_shadow import MirrorShadow, ready_pods
from bgserve.kube.objects import ANNOTATION_PREFIX, NO_MLFLOW, SlotMlflow, gateway_base
from bgserve.kube.readiness import Check
from bgserve.kube.route_wait import await_route, wait_seconds
from bgserve.settings import KubeGroup

# KServe's model transition states that will not resolve by waiting.
_FAILED_TRANSITIONS = {"BlockedByFailedLoad", "InvalidSpec"}


# Waiting for the router's report watches the route, and deletes a new one not taken.
ROUTE_WAIT_VERBS = ["delete", "watch"]


def required_rbac(
    router: str,
    llm_mode: str = "inferenceservice",
    *,
    shadow: bool = False,
    istio_status: bool = False,
) -> list[dict[str, list[str]]]:
    """The Role rules the backend needs: exactly the verbs it sends, nothing more
    (``shadow``: with the slots' drain token, whose pods it finds in EndpointSlices;
    ``istio_status``: waiting for istiod's report, ``KUBE_ISTIO_RECONCILE_TIMEOUT_SECONDS``;
    a gateway's report is waited for by default)."""
    route = ROUTERS[router]
    waits = router == "gateway" or istio_status
    slots = [INFERENCE_SERVICE.plural]
    if llm_mode == "llminferenceservice":
        slots.append(LLM_INFERENCE_SERVICE.plural)
    pods = [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]}]
    return [
        *(pods if shadow else []),
        {
            "apiGroups": [INFERENCE_SERVICE.group],
            "resources": slots,
            "verbs": ["create", "delete", "get", "list", "patch", "watch"],
        },
        {
            "apiGroups": [route.group],
            "resources": [route.plural],
            "verbs": ["create", "get", "patch", *(ROUTE_WAIT_VERBS if waits else [])],
        },
    ]


LlmLookup = Callable[[Release], LlmServing | None]
"""The base model of a release if it is an LLM (None for a classic model)."""
LLM_KIND_ANNOTATION = f"{ANNOTATION_PREFIX}llm-kind"


class KServeBackend(KubeBackend):
    """Slots as KServe InferenceServices behind a weighted HTTPRoute or VirtualService.
    Given ``llms``, an LLM release's slot is rendered with its base model
    (:func:`~bgserve.kube.kserve.llm_objects.llm_inference_service`) and a deployment
    with an LLM slot gets KServe's OpenAI routes beside the OIP ones.

    Every object it writes is labelled ``app.kubernetes.io/managed-by: bgserve`` and
    it never modifies or deletes an object without that label.
    """

    name = "kserve"

    def __init__(
        self,
        kube: KubeGroup,
        *,
        ready_timeout: float = 120.0,
        mlflow: SlotMlflow = NO_MLFLOW,
        api: client.ApiClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        llms: LlmLookup | None = None,
    ) -> None:
        super().__init__(
            kube, ready_timeout=ready_timeout, mlflow=mlflow, api=api, clock=clock, sleep=sleep
        )
        self.llms = llms
        self.services = self._objects(INFERENCE_SERVICE)
        self.routes = self._objects(ROUTERS[kube.kserve.router])
        self.group: LlmGroup | None = None
        # Per deployment: what the gateway took of the route last applied (route_report).
        self._taken: dict[str, dict[str, Any]] = {}
        # Per deployment: the routes last applied (the roles a mirror needs).
        self._routes: dict[str, list[Route]] = {}
        self.mirror = MirrorShadow(kube.slot_token, self._slot_pods, kube.namespace)
        if kube.kserve.llm_mode == "llminferenceservice":
            members = self._objects(LLM_INFERENCE_SERVICE)
            self.group = LlmGroup(members, self.readiness, kube, self.mlflow)

    def ensure_slot(self, deployment: str, release: Release) -> SlotInfo:
        """Apply the release's InferenceService (in LLMInferenceService mode, an LLM
        release's group member, at its current weight) and wait for Ready at its current
        generation.

        Idempotent: an up-to-date object is not written again. Never changes weights.
        Raises ReadinessTimeout when not ready within ``slot_ready_timeout_seconds``,
        BackendError when KServe reports a failed load or the API server refuses, or, in
        LLMInferenceService mode, when the deployment already runs releases of the other
        kind (LLM or not); an object this call created is then removed.
        """
        llm = self.llms(release) if self.llms is not None else None
        if self.group is not None:
            self._refuse_mixing(deployment, self.group, as_member=llm is not None)
            if llm is not None:
                return self.group.ensure(deployment, release, llm)
        desired = self._desired_service(deployment, release, llm)
        name = desired["metadata"]["name"]
        written, created = self.services.ensure(desired)
        try:
            obj = self.readiness.until(
                self.services,
                name,
                self._ready_or_none(name),
                f"InferenceService {name}",
                current=written,
            )
        except BgserveError:
            if created:
                self.services.delete(name)
            raise
        return self._info(deployment, release.id, obj)

    def _refuse_mixing(self, deployment: str, group: LlmGroup, *, as_member: bool) -> None:
        """A routing group cannot share traffic with an InferenceService behind a route:
        refuse a release whose kind differs from the slots the deployment already runs."""
        other = self.services if as_member else group.objects
        found = sorted(o["metadata"]["name"] for o in other.select(managed_labels(deployment)))
        if found:
            raise BackendError(
                f"{deployment} already runs {other.resource.kind} {', '.join(found)}: in "
                "LLMInferenceService mode a deployment's releases are either all LLMs (members "
                "of one routing group) or none; serve this release in another deployment"
            )

    def _desired_service(self, deployment: str, release: Release, llm: LlmServing | None) -> Obj:
        if llm is None:
            return inference_service(deployment, release, self.kube, self.mlflow)
        return llm_inference_service(deployment, release, llm, self.kube, self.mlflow)

    @staticmethod
    def _ready_or_none(name: str) -> Check[Obj]:
        def check(obj: Obj | None) -> Obj | None:
            if obj is None:
                raise BackendError(f"InferenceService {name} disappeared while starting")
            if is_ready(obj):
                return obj
            transition = obj.get("status", {}).get("modelStatus", {}).get("transitionStatus")
            if observed_current(obj) and transition in _FAILED_TRANSITIONS:
                raise BackendError(
                    f"InferenceService {name} failed to start ({transition}): "
                    f"see `kubectl describe inferenceservice {name}`",
                    details={"status": obj.get("status", {})},
                )
            return None

        return check

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        """Write all weights at once into the deployment's HTTPRoute or VirtualService; for
        a deployment of LLMInferenceServices, into its members' weights, one member at a
        time (:meth:`~bgserve.kube.kserve.llm_group.LlmGroup.set_weights`).

        Idempotent. Every routed release needs a slot, and one given more traffic than it
        takes now must be ready (traffic back to blue while it serves is never refused, so
        a revert works whatever green's state); otherwise, or if the write fails, raises
        BackendError (also for weights not summing to 100) and the previous weights stay
        in place.
        """
        check_weights(deployment, routes, BackendError)
        if self.group is not None:
            members = self.group.members(deployment)
            if members:
                self.group.set_weights(deployment, routes, members)
                return
        slots = {o["metadata"]["name"]: o for o in self.services.select(managed_labels(deployment))}
        # What the last build saw and made: the undo of a route the gateway refuses.
        seen: list[tuple[Obj | None, Obj]] = []

        def build(current: Obj | None) -> Obj:
            for route in routes:
                now = routed_weight(current, deployment, route.release_id)
                self._check_routable(deployment, route, slots, now)
            if any(_is_llm(slots.get(isvc_name(deployment, r.release_id))) for r in routes):
                desired = llm_weighted_route(deployment, routes, self.kube)
            else:
                desired = weighted_route(deployment, routes, self.kube)
            desired = self.mirror.mirrored(deployment, desired, routes, current)
            seen.append((current, desired))
            return desired

        name = route_name(deployment)
        self._taken.pop(deployment, None)
        written = self.routes.apply_with(name, build)
        if wait_seconds(self.kube) > 0:
            previous, desired = seen[-1]
            self._taken[deployment] = await_route(
                self.routes, self.readiness, self.kube, written, previous, desired
            )
        self._routes[deployment] = list(routes)

    def set_shadow(self, deployment: str, percent: int, max_queue: int = 256) -> None:
        """Mirror ``percent`` (0-100; 0 stops) of the deployment's requests to green through
        the route's own mirror (Gateway API ``RequestMirror``, Istio ``mirror``), and keep
        blue's and green's slots recording what they answer so :meth:`shadow_pairs` can
        pair the copies. The gateway answers clients from the weighted route as before;
        ``max_queue`` does not apply (the gateway sends copies itself).

        Idempotent. Raises InvalidInput for a percent outside 0-100; Conflict without the
        slots' drain token or for a deployment of LLMInferenceService members (no route
        of bgserve's to mirror); BackendError without a blue and green route applied by
        this process, or when the route cannot be written (the previous one stays).
        """
        check_shadow(percent, max_queue)
        routes = self._routes.get(deployment)
        if routes is None:
            raise BackendError(
                f"no route of {deployment} was applied since bgserve started: take a step "
                "(or restart bgserve, which re-applies it) before mirroring"
            )
        if self.group is not None and self.group.members(deployment):
            raise Conflict(
                f"{deployment}'s releases are LLMInferenceService members: KServe's routing "
                "group has no mirror bgserve can set; use InferenceServices behind a route"
            )
        previous = self.mirror.configure(deployment, percent, routes)
        try:
            self.set_routes(deployment, routes)
        except BgserveError:
            self.mirror.restore(deployment, previous)
            raise

    def shadow_pairs(self, deployment: str) -> ShadowBatch:
        """The mirrored copies paired with blue's live answers since the previous call,
        from the slots' records (:mod:`bgserve.kube.mirror_shadow`). Raises BackendError
        when a slot cannot be drained."""
        return self.mirror.pairs(deployment, self._routes.get(deployment, ()))

    def close(self) -> None:
        """Close the API client and the drain client. Idempotent; slots keep running."""
        self.mirror.close()
        super().close()

    def _slot_pods(self, deployment: str, release_id: int) -> list[str]:
        """The slot's pods, from its predictor Service's EndpointSlices; its status URL
        when it has none there (a Knative-mode predictor answers through its activator)."""
        service = f"{isvc_name(deployment, release_id)}-predictor"
        pods = ready_pods(client.DiscoveryV1Api(self._client), self.kube.namespace, service)
        if pods:
            return pods
        info = self.slot_info(deployment, release_id)
        return [] if info is None else [info.endpoint]

    def route_report(self, deployment: str) -> Mapping[str, Any] | None:
        """What the router reported of the route last applied for ``deployment``: the
        route, the generation it took and who took it (the Gateways, or istiod); None
        when bgserve did not wait (the wait turned off). Raises nothing."""
        return self._taken.get(deployment)

    def _check_routable(
        self, deployment: str, route: Route, slots: Mapping[str, Mapping[str, Any]], now: int
    ) -> None:
        name = isvc_name(deployment, route.release_id)
        obj = slots.get(name)
        if obj is None:
            raise BackendError(
                f"release {route.release_id} has no InferenceService {name} for {deployment}: "
                "ensure its slot before routing to it"
            )
        if needs_availability(route, now) and not is_ready(obj):
            raise BackendError(
                f"InferenceService {name} is not ready: refusing to give it {route.weight}%"
            )

    def retire_slot(self, deployment: str, release_id: int) -> None:
        """Delete the release's InferenceService(s) (and LLMInferenceService(s) in that
        mode) that bgserve manages for ``deployment``.

        Idempotent: nothing to delete is fine. Objects without bgserve's managed-by
        label are left alone even if their other labels match. Raises BackendError, also
        (deleting nothing) while bgserve's weighted route or the member's weight still
        gives the slot traffic.
        """
        if self.group is not None:
            self.group.retire(deployment, release_id)
        route = self.routes.get(route_name(deployment))
        # A route bgserve does not manage routes nothing of bgserve's (a failed deploy's
        # slot is undone even when someone else's route sits on the name).
        weight = routed_weight(route, deployment, release_id) if route and is_managed(route) else 0
        refuse_retiring_routed(deployment, release_id, weight)
        for obj in self.services.select(managed_labels(deployment, release_id)):
            self.services.delete(obj["metadata"]["name"])

    def data_plane_url(self, deployment: str) -> str | None:
        """The gateway URL from settings: the OIP infer URL on bgserve's route, or, for a
        deployment whose releases are members of a KServe routing group (no OIP route),
        its OpenAI chat URL ``{base}/v1/chat/completions`` (clients send ``model``: the
        deployment). None without a gateway address. Never raises: members that cannot
        be listed give the infer URL."""
        base = gateway_base(deployment, self.kube)
        if base is None or self.group is None:
            return super().data_plane_url(deployment)
        try:
            grouped = bool(self.group.members(deployment))
        except BgserveError:
            grouped = False
        return f"{base}/v1/chat/completions" if grouped else super().data_plane_url(deployment)

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        """The InferenceService's (or group member's) address and readiness, or None if
        absent. Read-only; raises BackendError if the API server cannot be read."""
        if self.group is not None:
            member = self.group.objects.get(llmisvc_name(deployment, release_id))
            if member is not None and is_managed(member):
                return self.group.info(release_id, member)
        obj = self.services.get(isvc_name(deployment, release_id))
        return None if obj is None else self._info(deployment, release_id, obj)

    def _info(self, deployment: str, release_id: int, obj: Mapping[str, Any]) -> SlotInfo:
        status = obj.get("status", {})
        endpoint = (
            (status.get("address") or {}).get("url")
            or status.get("url")
            or f"http://{predictor_host(deployment, release_id, self.kube.namespace)}"
        )
        return SlotInfo(release_id=release_id, endpoint=endpoint, ready=is_ready(obj))


def _is_llm(obj: Mapping[str, Any] | None) -> bool:
    """True for an InferenceService rendered for an LLM release (its annotation says so)."""
    return obj is not None and LLM_KIND_ANNOTATION in obj["metadata"].get("annotations", {})


if TYPE_CHECKING:
    _conforms: type[Backend] = KServeBackend
