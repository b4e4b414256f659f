"""The rules every backend with a remote route applies to a set of weights (KServe, Seldon,
SageMaker): pure, raising the error the caller names."""

from __future__ import annotations

from collections.abc import Sequence

from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, BgserveError, InvalidInput


def check_weights(
    deployment: str, routes: Sequence[Route], error: type[BgserveError] = InvalidInput
) -> None:
    """Raise ``error`` unless ``routes`` are distinct releases whose weights sum to 100.

    Object builders raise InvalidInput (bad input to ``bgserve render``); the backends pass
    BackendError, what the Backend protocol's ``set_routes`` raises.
    """
    if not routes or sum(r.weight for r in routes) != 100 or any(r.weight < 0 for r in routes):
        weights = [r.weight for r in routes]
        raise error(f"routes of {deployment} must have weights summing to 100, got {weights}")
    if len({r.release_id for r in routes}) != len(routes):
        raise error(f"routes of {deployment} name a release twice: {list(routes)}")


def refuse_retiring_routed(deployment: str, release_id: int, weight: int) -> None:
    """Raise BackendError when the slot of ``release_id`` still takes ``weight`` > 0 percent
    of the deployment's traffic (the Backend protocol's ``retire_slot`` rule)."""
    if weight > 0:
        raise BackendError(
            f"release {release_id} still takes {weight}% of {deployment}'s traffic: "
            "route it to 0 before retiring it"
        )


def needs_availability(route: Route, current_weight: int) -> bool:
    """Whether giving ``route`` its weight needs the slot to be ready now.

    Never for blue while it takes traffic (a revert gives traffic back to the release
    that was serving it, whatever green's state), nor for a weight that does not grow.
    """
    if route.role == "blue" and current_weight > 0:
        return False
    return route.weight > current_weight
