"""The one small Protocol every serving backend implements.

A backend runs *slots*: one per (deployment, release), each serving the release's
bundle over the Open Inference Protocol v2 under the deployment's name. It also owns
the weighted route in front of a deployment's slots. It knows nothing of phases,
gates or history: the service tells it what to do, in order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from bgserve.dataplane.wire import BODY_CAP as BODY_CAP
from bgserve.dataplane.wire import ShadowBatch as ShadowBatch
from bgserve.dataplane.wire import ShadowPair as ShadowPair
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import InvalidInput

SlotLostCallback = Callable[[str, int], None]
"""``callback(deployment, release_id)``: that slot's process or pod died on its own."""


@dataclass(frozen=True)
class SlotInfo:
    """Where a slot answers and whether it is ready.

    ``endpoint`` is the slot's own base URL: ``{endpoint}/v2/models/{deployment}/infer``
    reaches this slot directly, bypassing the weights.
    """

    release_id: int
    endpoint: str
    ready: bool


@dataclass(frozen=True)
class SlotCall:
    """How to call one slot through its platform's API: every call goes to ``url``, with
    the headers ``headers(body)`` gives for its body (a signature, the slot's name)."""

    url: str
    headers: Callable[[bytes], Mapping[str, str]]


class Backend(Protocol):
    """What the service needs from a serving backend (local processes, KServe, Seldon,
    SageMaker)."""

    name: str

    def ensure_slot(self, deployment: str, release: Release) -> SlotInfo:
        """Make a slot serve ``release`` for ``deployment`` and wait until it is ready.

        Idempotent: an existing ready slot for the pair is reused as it is.
        Raises ReadinessTimeout if the slot is not ready in time (the half-started
        slot is removed), BackendError for any other failure. Never changes weights.
        """
        ...

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        """Apply the weights of ``routes`` (summing to 100) atomically.

        Idempotent. Every routed release must have a slot from :meth:`ensure_slot`.
        Requests already in flight finish on the slot they started on.
        Raises BackendError and leaves the previous weights in place on failure.
        """
        ...

    def retire_slot(self, deployment: str, release_id: int) -> None:
        """Stop and remove the slot of ``release_id`` for ``deployment``.

        Idempotent: retiring a slot that does not exist does nothing. The caller first
        routes all traffic away from it: while the route still gives it weight, raises
        BackendError and deletes nothing. Raises BackendError on any other failure.
        """
        ...

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        """The slot's endpoint and readiness, or None if it does not exist. No side effects."""
        ...

    def data_plane_url(self, deployment: str) -> str | None:
        """The deployment's infer URL on the weighted route
        (``.../v2/models/<deployment>/infer``), if the backend knows one. No side effects."""
        ...

    def close(self) -> None:
        """Release the backend's resources; the local backend stops its slots. Idempotent."""
        ...


@runtime_checkable
class PlatformCalls(Protocol):
    """Optional: a backend whose slots answer only through the platform's API, not at a
    URL of their own (SageMaker: one invocation URL per endpoint, the variant named in a
    header, every call signed). Direct slot calls (golden comparison, warm-up) use it."""

    def slot_call(self, deployment: str, release_id: int) -> SlotCall:
        """How to call the slot of ``release_id`` directly. No side effects. Raises
        BackendError when the platform cannot be called (no credentials)."""
        ...


@runtime_checkable
class SlotWatcher(Protocol):
    """Optional: a backend that notices slots dying on their own and reports them.

    The local backend implements it (process watcher plus the router's breaker); a
    backend whose platform restarts slots itself (KServe, Seldon) need not. The service
    registers one callback at start-up and applies the slot-loss rule of
    :func:`bgserve.domain.slots.on_slot_lost` when it fires.
    """

    def watch_slots(self, callback: SlotLostCallback) -> None:
        """Call ``callback(deployment, release_id)`` once per slot that dies on its own.

        The dead slot is already out of routing when the callback runs; the callback must
        return quickly (it runs on the backend's watcher thread). Idempotent: a second
        call replaces the callback. Raises nothing.
        """
        ...


@runtime_checkable
class RouteReports(Protocol):
    """Optional: a backend whose router reports taking a route (a Gateway API gateway's
    route status), so the history can say which generation of the route took effect."""

    def route_report(self, deployment: str) -> Mapping[str, Any] | None:
        """What the router reported of the route last applied for ``deployment`` (JSON-ready:
        e.g. the route, the generation taken and who took it); None when nothing was
        reported. Raises nothing."""
        ...


def check_shadow(percent: int, max_queue: int) -> None:
    """Raise InvalidInput unless ``percent`` is 0-100 and ``max_queue`` at least 1."""
    if not 0 <= percent <= 100:
        raise InvalidInput(
            f"shadow percent must be between 0 and 100 (0 stops mirroring), got {percent}",
            field="percent",
        )
    if max_queue < 1:
        raise InvalidInput(
            f"the shadow queue must hold at least 1 request, got {max_queue}", field="max_queue"
        )


@runtime_checkable
class ShadowTraffic(Protocol):
    """Optional: a backend that can mirror blue's requests to green and pair the two
    answers: the local backend's data plane, or KServe's gateway mirror paired from the
    slots' records (:mod:`bgserve.kube.mirror_shadow`).
    """

    def set_shadow(self, deployment: str, percent: int, max_queue: int = 256) -> None:
        """Mirror ``percent`` (0-100; 0 stops) of the infer requests blue answers to green.

        The client is answered by blue as without mirroring; the copy goes to green after,
        through a queue of at most ``max_queue`` copies (a full queue drops the copy).
        Idempotent. Raises InvalidInput for a percent outside 0-100 or a ``max_queue``
        below 1, BackendError if the deployment has no green route.
        """
        ...

    def shadow_pairs(self, deployment: str) -> ShadowBatch:
        """Drain the pairs and counters collected since the previous call (an empty
        batch if nothing was mirrored). Raises BackendError if the data plane cannot be
        asked."""
        ...
