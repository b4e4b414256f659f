"""The LLMInferenceService side of the KServe backend (``BGSERVE_KSERVE_LLM_MODE=
llminferenceservice``): each LLM release of a deployment is a member of the KServe routing
group named after the deployment, and its share of traffic is its member's weight.

KServe's controller writes the routes from the members' weights; bgserve writes members and
weights only. A member is rendered once per :meth:`LlmGroup.ensure` (field manager
``bgserve``, its weight kept as it is); a weight is changed by applying that one field as
field manager ``bgserve-weights``, so a change of split needs no release and touches nothing
else of the member. A split change is one write per member, ordered by
:func:`~bgserve.kube.kserve.llm_isvc.weight_writes`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bgserve.backends.base import SlotInfo
from bgserve.backends.routes import needs_availability, refuse_retiring_routed
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, BgserveError
from bgserve.kube.client import (
    RELEASE_LABEL,
    KubeObjects,
    Obj,
    condition,
    is_ready,
    managed_labels,
    observed_current,
)
from bgserve.kube.kserve.llm_isvc import (
    declared_weight,
    llm_inference_service,
    llmisvc_name,
    member_endpoint,
    member_weight,
    weight_only,
    weight_writes,
)
from bgserve.kube.kserve.llm_objects import LlmServing
from bgserve.kube.objects import NO_MLFLOW, SlotMlflow
from bgserve.kube.readiness import Check, Readiness
from bgserve.settings import KubeGroup

WEIGHT_MANAGER = "bgserve-weights"
# KServe reports a member whose configuration cannot be merged or is refused here; waiting
# does not resolve it (the controller creates nothing until it is True).
_PRESETS = "PresetsCombined"


class LlmGroup:
    """A deployment's LLM releases as LLMInferenceServices in one KServe routing group.

    ``members`` are the LLMInferenceService objects (bgserve-managed only are touched);
    every method translates API failures into :class:`BackendError`.
    """

    def __init__(
        self,
        members: KubeObjects,
        readiness: Readiness,
        kube: KubeGroup,
        mlflow: SlotMlflow = NO_MLFLOW,
    ) -> None:
        self.objects = members
        self.readiness = readiness
        self.kube = kube
        self.mlflow = mlflow

    def members(self, deployment: str) -> dict[str, Obj]:
        """bgserve's LLMInferenceServices of ``deployment``, by name. Read-only; raises
        BackendError if they cannot be listed."""
        return {o["metadata"]["name"]: o for o in self.objects.select(managed_labels(deployment))}

    def ensure(self, deployment: str, release: Release, llm: LlmServing) -> SlotInfo:
        """Apply the release's member and wait until it is Ready at its current generation.

        A new member joins at weight 0; an existing one keeps the weight it declares, so
        this never moves traffic. Idempotent: an up-to-date member is not written again.
        Raises ReadinessTimeout when not ready within the readiness timeout, BackendError
        when KServe cannot combine its configuration (``PresetsCombined`` False) or the API
        server refuses; a member this call created is then deleted.
        """
        name = llmisvc_name(deployment, release.id)

        def build(current: Obj | None) -> Obj:
            weight = declared_weight(current)
            return llm_inference_service(deployment, release, llm, weight, self.kube, self.mlflow)

        written, created = self.objects.ensure_with(name, build)
        try:
            obj = self.readiness.until(
                self.objects, name, _ready_or_none(name), f"LLMInferenceService {name}",
                current=written,
            )  # fmt: skip
        except BgserveError:
            if created:
                self.objects.delete(name)
            raise
        return self.info(release.id, obj)

    def set_weights(
        self, deployment: str, routes: Sequence[Route], members: Mapping[str, Obj]
    ) -> None:
        """Give every routed release's member its route's weight, and every other member of
        ``members`` (the deployment's, as just read) 0.

        Idempotent: a member already at its weight is not written. One write per changed
        member, shrinking weights first unless that would leave the group without weight.
        Raises BackendError, writing nothing, when a routed release has no member or one
        given more traffic than it takes is not Ready at its current generation (a weight
        just written is a new generation: for one KServe has not observed yet, it waits up
        to the readiness timeout, then raises ReadinessTimeout); when a write fails, the
        weights already written are put back (as far as the API server lets) and it raises.
        """
        current = {name: member_weight(obj, deployment) for name, obj in members.items()}
        for route in routes:
            self._check_routable(deployment, route, members, current)
        desired = {name: 0 for name in members}
        desired |= {llmisvc_name(deployment, r.release_id): r.weight for r in routes}
        written: list[tuple[str, int]] = []
        try:
            for name, weight in weight_writes(current, desired):
                self._write_weight(deployment, members[name], weight)
                written.append((name, current.get(name, 0)))
        except BackendError as exc:
            also = self._put_back(deployment, members, written, exc)
            if also is not None:
                raise also from exc
            raise

    def _check_routable(
        self, deployment: str, route: Route, members: Mapping[str, Obj], current: Mapping[str, int]
    ) -> None:
        name = llmisvc_name(deployment, route.release_id)
        obj = members.get(name)
        if obj is None:
            raise BackendError(
                f"release {route.release_id} has no LLMInferenceService {name} for "
                f"{deployment}: ensure its slot before routing to it (a deployment's "
                "routing group holds LLM releases only)"
            )
        if needs_availability(route, current[name]) and not is_ready(self._observed(name, obj)):
            raise BackendError(
                f"LLMInferenceService {name} is not ready: refusing to give it {route.weight}%"
            )

    def _observed(self, name: str, obj: Obj) -> Obj:
        """``obj`` once KServe's status describes its current generation (waiting for it
        when the status lags, as after a weight write)."""

        def observed(found: Obj | None) -> Obj | None:
            if found is None:
                raise BackendError(f"LLMInferenceService {name} disappeared")
            return found if observed_current(found) else None

        what = f"KServe's status of LLMInferenceService {name}"
        return self.readiness.until(self.objects, name, observed, what, current=obj)

    def _write_weight(self, deployment: str, member: Obj, weight: int) -> None:
        name = member["metadata"]["name"]
        release_id = int(member["metadata"]["labels"][RELEASE_LABEL])

        def build(current: Obj | None) -> Obj:
            if current is None:
                raise BackendError(f"LLMInferenceService {name} disappeared: its weight is lost")
            return weight_only(deployment, release_id, weight, self.kube)

        self.objects.apply_with(name, build, manager=WEIGHT_MANAGER)

    def _put_back(
        self,
        deployment: str,
        members: Mapping[str, Obj],
        written: list[tuple[str, int]],
        failure: BackendError,
    ) -> BackendError | None:
        """Write the weights of ``written`` back (last first); None once done, else the
        error saying the split is left partial."""
        for name, weight in reversed(written):
            try:
                self._write_weight(deployment, members[name], weight)
            except BackendError as again:
                return BackendError(
                    f"{failure.message}; putting the earlier weights back failed too "
                    f"({again.message}): the group's split of {deployment} is partial, apply "
                    "the change again",
                    details=failure.details,
                )
        return None

    def retire(self, deployment: str, release_id: int) -> None:
        """Delete the release's member(s) bgserve manages for ``deployment``.

        Idempotent: nothing to delete is fine. Raises BackendError, deleting nothing, while
        the member still declares a weight (and is not stopped), or if the API refuses.
        """
        member = self.objects.get(llmisvc_name(deployment, release_id))
        refuse_retiring_routed(deployment, release_id, member_weight(member, deployment))
        for obj in self.objects.select(managed_labels(deployment, release_id)):
            self.objects.delete(obj["metadata"]["name"])

    def info(self, release_id: int, obj: Obj) -> SlotInfo:
        """The member's own address (its workload Service) and readiness. Pure."""
        return SlotInfo(release_id, member_endpoint(obj, self.kube.namespace), is_ready(obj))


def _ready_or_none(name: str) -> Check[Obj]:
    def check(obj: Obj | None) -> Obj | None:
        if obj is None:
            raise BackendError(f"LLMInferenceService {name} disappeared while starting")
        if is_ready(obj):
            return obj
        presets = condition(obj, _PRESETS)
        if observed_current(obj) and presets is not None and presets.get("status") == "False":
            raise BackendError(
                f"LLMInferenceService {name} cannot start ({presets.get('reason')}: "
                f"{presets.get('message', '')}): see `kubectl describe llminferenceservice "
                f"{name}`",
                details={"status": obj.get("status", {})},
            )
        return None

    return check
