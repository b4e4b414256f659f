"""Waiting for a Gateway API gateway to take a route bgserve wrote, and undoing the write
when it does not (the reading of the route's status is :mod:`.route_status`'s)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.kube.client import KubeObjects, Obj
from bgserve.kube.readiness import Readiness
from bgserve.kube.route_status import RouteRefused, taken_report, waiting_on
from bgserve.settings import KubeGroup


def await_gateway(
    routes: KubeObjects,
    readiness: Readiness,
    kube: KubeGroup,
    written: Obj,
    previous: Obj | None,
    desired: Obj,
) -> dict[str, Any]:
    """Wait until the gateway reports the HTTPRoute just written (``desired``) ``Accepted`` and
    ``ResolvedRefs`` for its generation, and return what it took (:func:`taken_report`);
    on a refusal or after ``kube_route_accept_timeout_seconds``, put ``previous`` back
    (delete a route that did not exist) and raise BackendError saying what the gateway
    reported."""
    name = desired["metadata"]["name"]
    timeout = kube.route_accept_timeout_seconds
    waiting = replace(readiness, timeout=timeout)
    what = f"HTTPRoute {kube.namespace}/{name}"
    try:
        return waiting.until(routes, name, taken_report, what, current=written)
    except RouteRefused as exc:
        reason = str(exc)
    except ReadinessTimeout:
        reason = f"no gateway took {what} within {timeout:g}s ({_report(routes, kube, name)})"
    try:
        if previous is None:
            routes.delete(name)
        else:
            routes.apply_with(name, lambda _current: {**desired, "spec": previous["spec"]})
    except BackendError as undo:
        message = f"{reason}; putting the previous route back failed too: {undo}"
        raise BackendError(message) from undo
    raise BackendError(f"{reason}; the previous route is back")


def _report(routes: KubeObjects, kube: KubeGroup, name: str) -> str:
    """What the gateway said of route ``name`` so far, and where to look."""
    gateway = f"{kube.gateway_namespace or kube.namespace}/{kube.gateway_name}"
    return (
        f"{waiting_on(routes.get(name))}: is Gateway {gateway} there, with its "
        "controller running? (BGSERVE_KUBE_GATEWAY_NAME, BGSERVE_KUBE_GATEWAY_NAMESPACE; "
        "BGSERVE_KUBE_ROUTE_ACCEPT_TIMEOUT_SECONDS=0 does not wait)"
    )
