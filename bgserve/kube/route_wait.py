"""Waiting for the router to take a route bgserve wrote, and undoing the write when it
does not: a Gateway API gateway reporting the HTTPRoute (:mod:`.route_status`), or
istiod reporting the VirtualService pushed to its proxies (:mod:`.istio_status`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.kube.client import KubeObjects, Obj
from bgserve.kube.istio_status import reconciled_report, reconciled_waiting_on
from bgserve.kube.readiness import Readiness
from bgserve.kube.route_status import RouteRefused, taken_report, waiting_on
from bgserve.settings import KubeGroup


def wait_seconds(kube: KubeGroup) -> float:
    """How long a route change waits for the router's report (0: it does not)."""
    if kube.kserve.router == "gateway":
        return kube.route_accept_timeout_seconds
    return kube.istio_reconcile_timeout_seconds


def await_route(
    routes: KubeObjects,
    readiness: Readiness,
    kube: KubeGroup,
    written: Obj,
    previous: Obj | None,
    desired: Obj,
) -> dict[str, Any]:
    """Wait until the router reports the route just written (``desired``) taken for its
    generation, and return what it took (the route, the generation, who took it): the
    gateway's ``Accepted`` and ``ResolvedRefs`` on an HTTPRoute, istiod's ``Reconciled``
    on a VirtualService. On a refusal, after :func:`wait_seconds`, or when the route can no
    longer be read, put ``previous`` back (delete a route that did not exist) and raise
    BackendError saying what was reported."""
    name = desired["metadata"]["name"]
    timeout = wait_seconds(kube)
    waiting = replace(readiness, timeout=timeout)
    gateway = kube.kserve.router == "gateway"
    what = f"{'HTTPRoute' if gateway else 'VirtualService'} {kube.namespace}/{name}"
    taken: Callable[[Obj | None], dict[str, Any] | None]
    taken = taken_report if gateway else reconciled_report
    try:
        return waiting.until(routes, name, taken, what, current=written)
    except RouteRefused as exc:
        reason = str(exc)
    except ReadinessTimeout:
        said = _gateway_report if gateway else _istio_report
        reason = f"no {'gateway' if gateway else 'Istio'} took {what} within {timeout:g}s "
        reason += f"({said(routes, kube, name)})"
    except BackendError as exc:  # the route could not be read, or was deleted meanwhile
        reason = f"waiting for the report on {what} failed: {exc}"
    try:
        if previous is None:
            routes.delete(name)
        else:
            routes.apply_with(name, lambda _current: {**desired, "spec": previous["spec"]})
    except BackendError as undo:
        message = f"{reason}; putting the previous route back failed too: {undo}"
        raise BackendError(message) from undo
    raise BackendError(f"{reason}; the previous route is back")


def _gateway_report(routes: KubeObjects, kube: KubeGroup, name: str) -> str:
    """What the gateway said of route ``name`` so far, and where to look."""
    gateway = f"{kube.gateway_namespace or kube.namespace}/{kube.gateway_name}"
    return (
        f"{waiting_on(routes.get(name))}: is Gateway {gateway} there, with its "
        "controller running? (BGSERVE_KUBE_GATEWAY_NAME, BGSERVE_KUBE_GATEWAY_NAMESPACE; "
        "BGSERVE_KUBE_ROUTE_ACCEPT_TIMEOUT_SECONDS=0 does not wait)"
    )


def _istio_report(routes: KubeObjects, kube: KubeGroup, name: str) -> str:
    """What istiod said of VirtualService ``name`` so far, and what it needs."""
    return (
        f"{reconciled_waiting_on(routes.get(name))}: does istiod run with "
        "PILOT_ENABLE_STATUS=true and PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING=true? "
        "(BGSERVE_KUBE_ISTIO_RECONCILE_TIMEOUT_SECONDS=0 does not wait)"
    )
