"""The Seldon Core v1 flavour: one SeldonDeployment per deployment, a predictor per release.

Selected with ``BGSERVE_SELDON_FLAVOUR=v1``; the objects are built by
:mod:`bgserve.kube.seldon.objects`, the shared rules live in
:mod:`bgserve.kube.seldon.base`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bgserve.backends.base import Backend, SlotInfo
from bgserve.backends.routes import check_weights, needs_availability
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, BgserveError
from bgserve.kube.client import Obj, is_managed
from bgserve.kube.readiness import Check
from bgserve.kube.seldon.base import SeldonBase, check_routable, generation_seen
from bgserve.kube.seldon.objects import (
    SELDON_DEPLOYMENT,
    V1_EXECUTOR_PORT,
    predictor,
    predictor_name,
    predictors_of,
    sdep_name,
    seldon_deployment,
    with_predictor,
    with_traffic,
)
from bgserve.kube.seldon.status import predictor_available
from bgserve.settings import KubeGroup


class SeldonV1Backend(SeldonBase):
    """Slots as predictors of one Seldon Core v1 SeldonDeployment per deployment."""

    def __init__(self, kube: KubeGroup, **kwargs: Any) -> None:
        super().__init__(kube, **kwargs)
        self.sdeps = self._objects(SELDON_DEPLOYMENT)

    def ensure_slot(self, deployment: str, release: Release) -> SlotInfo:
        """Add (or update) the release's predictor and wait until the SeldonDeployment's
        status at its new generation reports that predictor available.

        A new predictor takes 0% (100% when it is the only one); an existing one keeps
        its traffic. Idempotent. Raises ReadinessTimeout or BackendError (state Failed,
        API refusal); a predictor this call added is then removed.
        """
        name, pred = sdep_name(deployment), predictor_name(release.id)
        added = pred not in {p["name"] for p in predictors_of(self.sdeps.get(name))}
        written = self.sdeps.apply_with(name, lambda cur: self._with_slot(deployment, release, cur))
        try:
            obj = self.readiness.until(
                self.sdeps,
                name,
                self._ready_or_none(name, release.id),
                f"SeldonDeployment {name}",
                current=written,
            )
        except BgserveError:
            if added:
                self.retire_slot(deployment, release.id)
            raise
        return self._info(deployment, release.id, obj)

    def _with_slot(self, deployment: str, release: Release, current: Obj | None) -> Obj:
        preds = predictors_of(current)
        same = [p for p in preds if p["name"] == predictor_name(release.id)]
        traffic = same[0].get("traffic", 0) if same else (0 if preds else 100)
        new = predictor(deployment, release, traffic, self.kube, self.mlflow)
        return seldon_deployment(deployment, with_predictor(preds, new), self.kube)

    def _ready_or_none(self, name: str, release_id: int) -> Check[Obj]:
        def check(obj: Obj | None) -> Obj | None:
            if obj is None:
                raise BackendError(f"SeldonDeployment {name} disappeared while starting")
            status = obj.get("status", {})
            if generation_seen(obj) and status.get("state") == "Failed":
                raise BackendError(
                    f"SeldonDeployment {name} failed ({status.get('description', 'no reason')})"
                    f": see `kubectl describe seldondeployment {name}`",
                    details={"status": status},
                )
            if generation_seen(obj) and predictor_available(obj, release_id):
                return obj
            return None

        return check

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        """Write every predictor's traffic in one update of the SeldonDeployment.

        Idempotent. Every routed release needs a predictor, and one given traffic it does
        not take now must be available (traffic back to a predictor that is serving is
        never refused, so a revert works while green is down); otherwise, or if the write
        fails, raises BackendError (InvalidInput for bad weights) and the traffic stays.
        """
        check_weights(deployment, routes, BackendError)
        name = sdep_name(deployment)
        obj = self.sdeps.get(name)
        traffic = {p["name"]: int(p.get("traffic", 0)) for p in predictors_of(obj)}
        for route in routes:
            pred = predictor_name(route.release_id)
            what = f"predictor {pred} of SeldonDeployment {name}"
            if pred not in traffic:
                check_routable(None, route, what)
            elif needs_availability(route, traffic[pred]) and not predictor_available(
                obj or {}, route.release_id
            ):
                raise BackendError(f"{what} is not ready: refusing to give it {route.weight}%")
        self.sdeps.apply_with(
            name,
            lambda cur: seldon_deployment(
                deployment, with_traffic(deployment, predictors_of(cur), routes), self.kube
            ),
        )

    def retire_slot(self, deployment: str, release_id: int) -> None:
        """Remove the release's predictor; delete the SeldonDeployment with its last one.

        Idempotent. An unmanaged SeldonDeployment is left alone. Raises BackendError,
        also when the predictor still has traffic (route it away first).
        """
        name, pred = sdep_name(deployment), predictor_name(release_id)
        obj = self.sdeps.get(name)
        if obj is None or not is_managed(obj):
            return
        preds = predictors_of(obj)
        if pred not in {p["name"] for p in preds}:
            return
        if len(preds) == 1:
            self.sdeps.delete(name)
            return
        if any(p["name"] == pred and p.get("traffic", 0) > 0 for p in preds):
            raise BackendError(f"predictor {pred} of {name} still has traffic: route it away first")
        self.sdeps.apply_with(name, lambda cur: self._without(deployment, pred, cur))

    def _without(self, deployment: str, pred: str, current: Obj | None) -> Obj:
        kept = [p for p in predictors_of(current) if p["name"] != pred]
        return seldon_deployment(deployment, kept, self.kube)

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        """The predictor's own Service (bypassing the traffic split) and readiness, or
        None if the predictor does not exist. Read-only; raises BackendError."""
        obj = self.sdeps.get(sdep_name(deployment))
        names = {p["name"] for p in predictors_of(obj)}
        if obj is None or predictor_name(release_id) not in names:
            return None
        return self._info(deployment, release_id, obj)

    def _info(self, deployment: str, release_id: int, obj: Mapping[str, Any]) -> SlotInfo:
        service = f"{obj['metadata']['name']}-{predictor_name(release_id)}"
        reported = ((obj.get("status", {}).get("serviceStatus") or {}).get(service) or {}).get(
            "httpEndpoint"
        )
        host = reported or f"{service}.{self.kube.namespace}:{V1_EXECUTOR_PORT}"
        return SlotInfo(release_id, f"http://{host}", predictor_available(obj, release_id))


if TYPE_CHECKING:
    _conforms: type[Backend] = SeldonV1Backend
