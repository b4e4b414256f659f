"""Whether Istio has pushed a VirtualService bgserve wrote to its proxies, from the
resource's own status.

With status on (istiod's ``PILOT_ENABLE_STATUS`` and
``PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING``), istiod writes a ``Reconciled``
condition: False while the new configuration is on its way (reason ``stillPropagating``,
message ``61/122 complete``), True once every proxy has it; ``status.observedGeneration``
names the generation it describes (an integer or a string: Istio's schema takes both).
Istio's ``PassedAnalysis`` condition is informational and never holds a step. Pure: no
I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bgserve.errors import BackendError

RECONCILED = "Reconciled"


def reconciled_report(service: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What Istio took once it reports the VirtualService ``service`` ``Reconciled`` for
    its current generation (the route, that generation, and istiod's count of proxies);
    None while waiting.

    Raises:
        BackendError: the VirtualService was deleted meanwhile.
    """
    if service is None:
        raise BackendError("the VirtualService was deleted while bgserve waited for Istio")
    reconciled = _current_reconciled(service)
    if reconciled is None or reconciled.get("status") != "True":
        return None
    meta = service["metadata"]
    proxies = str(reconciled.get("message") or "every proxy")
    return {
        "route": f"{meta.get('namespace', '')}/{meta['name']}",
        "generation": meta.get("generation"),
        "taken_by": [f"istiod ({proxies})"],
    }


def reconciled_waiting_on(service: Mapping[str, Any] | None) -> str:
    """What Istio reported of ``service`` so far, for a timeout's message."""
    if service is None:
        return "the VirtualService is gone"
    reconciled = _current_reconciled(service)
    if reconciled is None:
        generation = service["metadata"].get("generation")
        return f"Istio reported nothing on generation {generation}"
    said = f"{RECONCILED}={reconciled.get('status')}"
    details = [str(reconciled[k]) for k in ("reason", "message") if reconciled.get(k)]
    return f"{said} ({', '.join(details)})" if details else said


def _current_reconciled(service: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Reconciled condition if the status describes the current generation."""
    status = service.get("status") or {}
    generation = service["metadata"].get("generation")
    if str(status.get("observedGeneration")) != str(generation):
        return None
    for condition in status.get("conditions") or []:
        if condition.get("type") == RECONCILED:
            return dict(condition)
    return None
