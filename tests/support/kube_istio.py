"""A stand-in for istiod's status writer (``PILOT_ENABLE_STATUS`` with config distribution
tracking): each new generation of a VirtualService is first reported ``Reconciled``
False (``stillPropagating``, ``0/2 complete``), then True (``2/2 complete``) on the next
look, with ``status.observedGeneration`` the generation it describes, as istiod writes it.

``stuck`` keeps it at ``1/2 complete`` (a proxy that never acknowledges); ``silent``
writes nothing (status turned off). Status only, no traffic: Istio cannot run here.
"""

from __future__ import annotations

from typing import Any

from tests.support.kube import Cluster, Controller

ISTIO_GROUP = "networking.istio.io"
NOW = "2026-01-01T00:00:00Z"


class IstioStatus:
    """Plays istiod reporting the distribution of every VirtualService."""

    def __init__(self, server: Cluster) -> None:
        self.server = server
        self.stuck = False
        self.silent = False
        self.controller = Controller(
            server, ("virtualservices",), self.reconcile, lambda _: None, observed=reconciled
        )

    def reconcile(self, service: dict[str, Any]) -> None:
        """Write the next report on ``service``'s current generation."""
        if self.silent:
            return
        meta = service["metadata"]
        status = service.get("status") or {}
        propagating = str(status.get("observedGeneration")) == str(meta["generation"])
        if self.stuck:
            condition = ("False", "stillPropagating", "1/2 complete")
        elif propagating:
            condition = ("True", "", "2/2 complete")
        else:
            condition = ("False", "stillPropagating", "0/2 complete")
        state, reason, message = condition
        report = {
            # istiod writes the generation as a string (int64 in its protobuf JSON)
            "observedGeneration": str(meta["generation"]),
            "conditions": [
                {
                    "type": "Reconciled",
                    "status": state,
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": NOW,
                }
            ],
        }
        self.server.set_status(
            ISTIO_GROUP, "virtualservices", meta["namespace"], meta["name"], report
        )


def reconciled(service: dict[str, Any]) -> int | None:
    """The generation istiod reports fully pushed (None while propagating)."""
    status = service.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Reconciled" and condition.get("status") == "True":
            return int(status["observedGeneration"])
    return None
