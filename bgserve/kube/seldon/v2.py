"""The Seldon backend: Seldon Core v2 Models + Experiment, or a v1 SeldonDeployment.

``BGSERVE_SELDON_FLAVOUR`` picks the generation (see :mod:`bgserve.kube.seldon.objects`
for the objects). Both flavours share the KServe backend's rules: every write reads
first and carries the resourceVersion it read, only objects labelled
``app.kubernetes.io/managed-by: bgserve`` are touched, a slot counts as ready only
when the controller's status describes the current generation, and a slot this call
created is removed again when it fails to become ready.

Seldon Core is licensed under the Business Source License since 2024: bgserve only
writes its resources; production use needs a licence from Seldon.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bgserve.backends.base import Backend, SlotInfo
from bgserve.backends.routes import check_weights, refuse_retiring_routed
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, BgserveError
from bgserve.kube.client import (
    Obj,
    condition,
    is_managed,
    managed_labels,
)
from bgserve.kube.readiness import Check
from bgserve.kube.seldon.base import (
    SeldonBase,
    check_routable,
    generation_seen,
    ready_true,
)
from bgserve.kube.seldon.objects import (
    EXPERIMENT,
    MODEL,
    experiment,
    experiment_name,
    model,
    model_name,
)
from bgserve.settings import KubeGroup

# Seldon v2 model states (the ModelReady condition's reason) that waiting will not fix.
_FAILED_MODEL_STATES = {"ModelFailed", "ScheduleFailed", "LoadFailed"}


def candidate_weights(experiment: Obj | None) -> dict[str, int]:
    """Each candidate Model's weight in ``experiment`` (none when it does not exist)."""
    candidates = (experiment or {}).get("spec", {}).get("candidates", [])
    return {str(c.get("name")): int(c.get("weight", 0)) for c in candidates}


class SeldonV2Backend(SeldonBase):
    """Slots as Seldon Core v2 Models, weighted by one Experiment per deployment."""

    def __init__(self, kube: KubeGroup, **kwargs: Any) -> None:
        super().__init__(kube, **kwargs)
        self.models = self._objects(MODEL)
        self.experiments = self._objects(EXPERIMENT)

    def ensure_slot(self, deployment: str, release: Release) -> SlotInfo:
        """Apply the release's Model and wait for Ready at its current generation.

        Idempotent; never changes weights. Raises ReadinessTimeout when not ready within
        ``slot_ready_timeout_seconds``, BackendError when Seldon reports a failed load or
        schedule or the API server refuses, InvalidInput without a bundle storage URI;
        a Model this call created is then removed.
        """
        desired = model(deployment, release, self.kube)
        name = desired["metadata"]["name"]
        written, created = self.models.ensure(desired)
        try:
            obj = self.readiness.until(
                self.models, name, self._ready_or_none(name), f"Model {name}", current=written
            )
        except BgserveError:
            if created:
                self.models.delete(name)
            raise
        return self._info(deployment, release.id, obj)

    @staticmethod
    def _ready_or_none(name: str) -> Check[Obj]:
        def check(obj: Obj | None) -> Obj | None:
            if obj is None:
                raise BackendError(f"Model {name} disappeared while loading")
            if generation_seen(obj) and ready_true(obj):
                return obj
            reason = (condition(obj, "ModelReady") or {}).get("reason")
            if generation_seen(obj) and reason in _FAILED_MODEL_STATES:
                raise BackendError(
                    f"Model {name} failed to load ({reason}): see `kubectl describe model {name}`",
                    details={"status": obj.get("status", {})},
                )
            return None

        return check

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        """Write every weight at once into the deployment's Experiment (created if needed).

        Idempotent. Every routed release needs a Model, and one given more traffic than
        it takes now must be ready (traffic back to blue while it serves is never
        refused); otherwise, or if the write fails, raises BackendError (InvalidInput for
        bad weights) and the Experiment keeps its previous weights.
        """
        check_weights(deployment, routes, BackendError)
        slots = {o["metadata"]["name"]: o for o in self.models.select(managed_labels(deployment))}

        def build(current: Obj | None) -> Obj:
            weights = candidate_weights(current)
            for route in routes:
                name = model_name(deployment, route.release_id)
                check_routable(slots.get(name), route, f"Model {name}", weights.get(name, 0))
            return experiment(deployment, routes, self.kube)

        self.experiments.apply_with(experiment_name(deployment), build)

    def retire_slot(self, deployment: str, release_id: int) -> None:
        """Delete the release's Model(s) that bgserve manages for ``deployment``.

        Idempotent; unmanaged Models are left alone. Raises BackendError, also (deleting
        nothing) while the Experiment still gives the Model traffic.
        """
        found = self.experiments.get(experiment_name(deployment))
        weights = candidate_weights(found if found and is_managed(found) else None)
        weight = weights.get(model_name(deployment, release_id), 0)
        refuse_retiring_routed(deployment, release_id, weight)
        for obj in self.models.select(managed_labels(deployment, release_id)):
            self.models.delete(obj["metadata"]["name"])

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        """The Model's direct endpoint and readiness, or None if absent. Read-only;
        raises BackendError if the API server cannot be read."""
        obj = self.models.get(model_name(deployment, release_id))
        return None if obj is None else self._info(deployment, release_id, obj)

    def _info(self, deployment: str, release_id: int, obj: Mapping[str, Any]) -> SlotInfo:
        s = self.kube
        template = s.seldon.slot_endpoint or "http://seldon-mesh.{namespace}"
        endpoint = template.format(
            model=obj["metadata"]["name"],
            deployment=deployment,
            release_id=release_id,
            namespace=s.namespace,
        )
        ready = generation_seen(obj) and ready_true(obj)
        return SlotInfo(release_id=release_id, endpoint=endpoint.rstrip("/"), ready=ready)


if TYPE_CHECKING:
    _conforms: type[Backend] = SeldonV2Backend
