"""Whether the gateway took a route bgserve wrote, from the Gateway API HTTPRoute status.

A conformant implementation reports, for each Gateway of ``spec.parentRefs`` it
controls, one entry of ``status.parents`` whose conditions say whether it accepted the
route (``Accepted``) and found every backend (``ResolvedRefs``), each condition with the
``metadata.generation`` of the spec it describes. Until both are True for the spec
bgserve just wrote, the gateway may still route by the previous weights, or (a backend
it cannot resolve) answer that share with errors. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from bgserve.errors import BackendError

GATEWAY_GROUP = "gateway.networking.k8s.io"
REQUIRED = ("Accepted", "ResolvedRefs")


class RouteRefused(BackendError):
    """The gateway reported the route's current spec not accepted or not resolved."""


def route_taken(route: Mapping[str, Any] | None) -> bool | None:
    """True once every parent Gateway of ``route`` reports ``Accepted`` and
    ``ResolvedRefs`` True for its current generation; None while any has not reported
    on that generation yet.

    Raises:
        RouteRefused: a parent reports either condition False for the current
            generation (its reason and message in the error).
        BackendError: the route was deleted meanwhile.
    """
    if route is None:
        raise BackendError("the route was deleted while bgserve waited for the gateway")
    taken = True
    for parent, current in _current_reports(route):
        for kind in REQUIRED:
            found = current.get(kind)
            if found is not None and found.get("status") == "False":
                raise RouteRefused(_refusal(route, parent, found))
            taken = taken and found is not None and found.get("status") == "True"
    return True if taken else None


def taken_report(route: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """:func:`route_taken`, saying what was taken once it was: the route, the generation of
    its spec and the Gateways that took it (what the deployment's history records);
    None while waiting. Raises as :func:`route_taken`."""
    if not route_taken(route):
        return None
    assert route is not None  # route_taken raised otherwise
    namespace = _namespace(route)
    parents = route["spec"].get("parentRefs") or []
    return {
        "route": f"{namespace}/{route['metadata']['name']}",
        "generation": route["metadata"].get("generation"),
        "taken_by": [_parent_name(parent, namespace) for parent in parents],
    }


def waiting_on(route: Mapping[str, Any] | None) -> str:
    """What the parents of ``route`` report so far, for a timeout's message."""
    if route is None:
        return "the route is gone"
    generation = route["metadata"].get("generation")
    parts = []
    for parent, current in _current_reports(route):
        said = [f"{kind}={current[kind].get('status')}" for kind in REQUIRED if kind in current]
        state = ", ".join(said) if said else f"nothing yet on generation {generation}"
        parts.append(f"Gateway {_parent_name(parent, _namespace(route))}: {state}")
    return "; ".join(parts)


def _current_reports(
    route: Mapping[str, Any],
) -> Iterator[tuple[Mapping[str, Any], dict[str, Mapping[str, Any]]]]:
    """Each parentRef of ``route`` with the conditions its Gateway reports on the
    route's current generation (by type; older reports left out)."""
    generation = route["metadata"].get("generation")
    statuses = (route.get("status") or {}).get("parents") or []
    for parent in route["spec"].get("parentRefs") or []:
        conditions = _parent_conditions(statuses, parent, _namespace(route))
        current = {
            kind: c for kind, c in conditions.items() if c.get("observedGeneration") == generation
        }
        yield parent, current


def _namespace(route: Mapping[str, Any]) -> str:
    return str(route["metadata"].get("namespace", ""))


def _parent_conditions(
    statuses: Sequence[Mapping[str, Any]], parent: Mapping[str, Any], namespace: str
) -> dict[str, Mapping[str, Any]]:
    """The conditions of the status entry reporting on ``parent`` (by type)."""
    for status in statuses:
        if _same_parent(status.get("parentRef") or {}, parent, namespace):
            return {c.get("type", ""): c for c in status.get("conditions") or []}
    return {}


def _same_parent(reported: Mapping[str, Any], parent: Mapping[str, Any], namespace: str) -> bool:
    """Whether two parentRefs name the same Gateway (and section), defaults applied."""

    def key(ref: Mapping[str, Any]) -> tuple[str, ...]:
        return (
            ref.get("group", GATEWAY_GROUP),
            ref.get("kind", "Gateway"),
            ref.get("namespace") or namespace,
            ref.get("name", ""),
            ref.get("sectionName", ""),
            str(ref.get("port", "")),
        )

    return key(reported) == key(parent)


def _parent_name(parent: Mapping[str, Any], namespace: str) -> str:
    return f"{parent.get('namespace') or namespace}/{parent.get('name', '')}"


def _refusal(
    route: Mapping[str, Any], parent: Mapping[str, Any], condition: Mapping[str, Any]
) -> str:
    namespace = _namespace(route)
    return (
        f"Gateway {_parent_name(parent, namespace)} reports HTTPRoute "
        f"{namespace}/{route['metadata']['name']} {condition.get('type')}=False "
        f"({condition.get('reason', 'no reason given')}): "
        f"{condition.get('message') or 'no message'}"
    )
