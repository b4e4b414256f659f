"""The router's control methods (:class:`~bgserve.dataplane.wire.DataPlaneControl`), safe
from any thread: routes, timeouts, the down set, counters and mirroring. They act on the
route state and the mirror, which the router's loop reads; a changed route table has the
loop prune the keep-alive pools of slots no longer routed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from bgserve.dataplane.forwarder import Forwarder
from bgserve.dataplane.mirror import Mirror
from bgserve.dataplane.outliers import Outliers
from bgserve.dataplane.route_state import RouteState
from bgserve.dataplane.route_table import Timeouts
from bgserve.dataplane.wire import RouterStats, RouteTarget, ShadowPage


class RouterControl:
    """The control half of :class:`~bgserve.dataplane.router.Router`, which sets these
    attributes up and runs the loop."""

    _state: RouteState
    _mirror: Mirror
    _outliers: Outliers
    _forwarder: Forwarder
    _loop: asyncio.AbstractEventLoop | None

    def set_routes(self, deployment: str, routes: Sequence[RouteTarget]) -> None:
        """Replace the deployment's routes atomically. Raises ValueError on a negative weight."""
        self._state.set_routes(deployment, routes)
        self._schedule_prune()

    def remove_routes(self, deployment: str) -> None:
        """Stop routing ``deployment`` (its requests get 404). Idempotent."""
        self._state.remove_routes(deployment)
        self._schedule_prune()

    def set_timeouts(
        self, deployment: str, first_byte_s: float | None, idle_s: float | None
    ) -> None:
        """Wait at most ``first_byte_s`` seconds for an answer of the deployment's slots to
        begin (then retry once elsewhere) and ``idle_s`` seconds between two pieces of an
        answer's body (then cut it); None keeps the router's default. Applies to requests
        picked from now on and to later routes. Idempotent. Raises ValueError for a
        value that is not above 0."""
        self._state.set_timeouts(deployment, first_byte_s, idle_s)

    def timeouts(self, deployment: str) -> Timeouts:
        """The deployment's timeouts now."""
        return self._state.timeouts(deployment)

    def mark_down(self, host: str, port: int) -> bool:
        """Stop routing to the slot at ``host:port`` until :meth:`mark_up`. Idempotent.

        Returns True if it was up. Stored weights are not touched: the schedule of every
        deployment using the slot is rebuilt from the healthy targets' weights.
        """
        return self._state.mark_down(host, port)

    def mark_up(self, host: str, port: int) -> None:
        """Route to the slot at ``host:port`` again by its weights. Idempotent."""
        self._state.mark_up(host, port)

    def probe_back(self, host: str, port: int) -> None:
        """Mark the slot down and probe it until it answers ready (an ejection handed over
        from an earlier data-plane process). Call after :meth:`start`."""
        self.mark_down(host, port)
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._outliers.probe, (host, port))

    def is_down(self, host: str, port: int) -> bool:
        """Whether the slot at ``host:port`` is excluded from routing now."""
        return self._state.is_down(host, port)

    def routes(self, deployment: str) -> list[RouteTarget]:
        """The deployment's current routes (empty if it is not routed)."""
        return self._state.routes(deployment)

    def stats(self) -> RouterStats:
        """Request, error and retry counts per (deployment, role, release) since start,
        and the bytes shadow traffic holds."""
        stats = self._state.stats()
        stats["shadow"] = self._mirror.usage()
        return stats

    def set_shadow(self, deployment: str, percent: int, max_queue: int = 256) -> None:
        """Mirror ``percent`` (0-100; 0 stops) of the infer requests blue answers to the
        green slot, through a queue of at most ``max_queue`` copies, for the blue and green
        releases routed now (see :meth:`Mirror.configure`). Idempotent.

        Raises ValueError for a percent outside 0-100, a queue below 1, or (mirroring) a
        deployment with no green route.
        """
        if percent and not any(t.role == "green" for t in self.routes(deployment)):
            raise ValueError(f"deployment {deployment!r} has no green route to mirror to")
        self._mirror.configure(deployment, percent, max_queue)

    def shadow_pairs(self, deployment: str, limit: int = 100) -> ShadowPage:
        """Up to ``limit`` collected pairs and the counters since the previous call, as
        JSON-ready data."""
        return self._mirror.drain(deployment, limit)

    def _schedule_prune(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed after the check
                loop.call_soon_threadsafe(self._prune_pools)

    def _prune_pools(self) -> None:
        live = self._state.addresses()
        self._forwarder.prune(live)
        self._state.forget_down(live)
