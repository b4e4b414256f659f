"""What both Seldon flavours share: the backend base, readiness reading and RBAC rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bgserve.backends.routes import needs_availability
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError
from bgserve.kube.base import KubeBackend
from bgserve.kube.client import condition
from bgserve.kube.seldon.objects import EXPERIMENT, MODEL, SELDON_DEPLOYMENT


def required_rbac(flavour: str) -> list[dict[str, list[str]]]:
    """The Role rules the backend needs: exactly the verbs it sends, nothing more."""
    if flavour == "v1":
        verbs = ("create", "delete", "get", "list", "patch", "watch")
        return [_rule(SELDON_DEPLOYMENT.group, SELDON_DEPLOYMENT.plural, *verbs)]
    return [
        _rule(MODEL.group, MODEL.plural, "create", "delete", "get", "list", "patch", "watch"),
        _rule(EXPERIMENT.group, EXPERIMENT.plural, "create", "get", "patch"),
    ]


def _rule(group: str, plural: str, *verbs: str) -> dict[str, list[str]]:
    return {"apiGroups": [group], "resources": [plural], "verbs": sorted(verbs)}


def generation_seen(obj: Mapping[str, Any]) -> bool:
    """Whether the status describes the current spec.

    Seldon's controllers do not all write ``observedGeneration``; when it is absent the
    status is taken as current, when present it must match.
    """
    observed = obj.get("status", {}).get("observedGeneration")
    return observed is None or observed == obj.get("metadata", {}).get("generation")


def ready_true(obj: Mapping[str, Any]) -> bool:
    cond = condition(obj)
    return cond is not None and cond.get("status") == "True"


class SeldonBase(KubeBackend):
    """Client, poller and settings shared by both flavours."""

    name = "seldon"


def check_routable(
    obj: Mapping[str, Any] | None, route: Route, what: str, current_weight: int = 0
) -> None:
    """Raise BackendError unless ``obj`` (the slot ``what``) exists and, if ``route``
    gives it more traffic than ``current_weight`` (blue serving: never), is ready."""
    if obj is None:
        raise BackendError(
            f"release {route.release_id} has no {what}: ensure its slot before routing to it"
        )
    if needs_availability(route, current_weight) and not ready_true(obj):
        raise BackendError(f"{what} is not ready: refusing to give it {route.weight}%")
