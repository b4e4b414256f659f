"""A stand-in for a Gateway API implementation's status: it reports every HTTPRoute's
parents ``Accepted`` and ``ResolvedRefs`` for the route's generation, as a conformant
gateway does once it has translated the route, or refuses it as told.

Status only, no traffic: the routes' traffic is a real gateway's part.
"""

from __future__ import annotations

from typing import Any

from tests.support.kube import Cluster, Controller

GATEWAY_GROUP = "gateway.networking.k8s.io"
CONTROLLER = "example.com/test-gateway"
NOW = "2026-01-01T00:00:00Z"


class GatewayStatus:
    """Plays a gateway writing HTTPRoute status. ``refuse`` (condition type -> (reason,
    message)) makes it report those conditions False from the next generation it sees;
    ``silent`` stops it reporting at all (a Gateway nobody controls)."""

    def __init__(self, server: Cluster) -> None:
        self.server = server
        self.refuse: dict[str, tuple[str, str]] = {}
        self.silent = False
        self.controller = Controller(
            server, ("httproutes",), self.reconcile, lambda _: None, observed=route_observed
        )

    def reconcile(self, route: dict[str, Any]) -> None:
        """Write the status the gateway reports for ``route`` now."""
        if self.silent:
            return
        meta = route["metadata"]
        parents = [
            {
                "parentRef": parent,
                "controllerName": CONTROLLER,
                "conditions": [
                    self._condition(kind, meta["generation"])
                    for kind in ("Accepted", "ResolvedRefs")
                ],
            }
            for parent in route["spec"].get("parentRefs") or []
        ]
        self.server.set_status(
            GATEWAY_GROUP, "httproutes", meta["namespace"], meta["name"], {"parents": parents}
        )

    def _condition(self, kind: str, generation: int) -> dict[str, Any]:
        reason, message = self.refuse.get(kind, (kind, ""))
        return {
            "type": kind,
            "status": "False" if kind in self.refuse else "True",
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": NOW,
        }


def route_observed(route: dict[str, Any]) -> int | None:
    """The generation every parent's conditions describe (None if any lags behind)."""
    seen = {
        c.get("observedGeneration")
        for parent in (route.get("status") or {}).get("parents") or []
        for c in parent.get("conditions") or []
    }
    return seen.pop() if len(seen) == 1 else None
