"""A complete in-memory backend: the Protocol's rules without processes or a cluster.

Like httpx's ``MockTransport``, it is shipped in the package so that service tests, API
fuzzing and ``BGSERVE_BACKEND=memory`` run in milliseconds against the same rules the
real backends enforce: weights sum to 100, a routed release needs a slot, a slot that
is down takes no traffic, a slot that takes traffic cannot be retired, and a refused
call changes nothing. Tests drive failures on demand (:meth:`MemoryBackend.fail_next_ensure`,
:meth:`MemoryBackend.kill`) and read back every call in order (:attr:`MemoryBackend.calls`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bgserve.backends.base import (
    Backend,
    ShadowBatch,
    ShadowPair,
    ShadowTraffic,
    SlotInfo,
    SlotLostCallback,
    SlotWatcher,
    check_shadow,
)
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError, BgserveError, ReadinessTimeout


@dataclass(frozen=True)
class Call:
    """One recorded Protocol call: the method's name and its arguments."""

    method: str
    args: tuple[Any, ...]


class MemoryBackend:
    """Slots and weights as records, guarded by one lock; every slot is up once ensured.

    ``slot_endpoint`` and ``data_plane`` are URL templates with ``{deployment}`` (and
    ``{release_id}`` for slots) substituted; ``data_plane=None`` means no entry point.
    """

    name = "memory"

    def __init__(
        self,
        *,
        slot_endpoint: str = "memory://{deployment}/{release_id}",
        data_plane: str | None = "memory://{deployment}/v2/models/{deployment}/infer",
    ) -> None:
        self._slot_endpoint = slot_endpoint
        self._data_plane = data_plane
        self._lock = threading.RLock()
        self._slots: dict[tuple[str, int], bool] = {}  # (deployment, release id) -> up
        self._routes: dict[str, tuple[Route, ...]] = {}
        self._failures: dict[int, deque[BgserveError]] = {}
        self._on_lost: SlotLostCallback | None = None
        self._shadow: dict[str, int] = {}
        self._shadow_batches: dict[str, tuple[list[ShadowPair], int, int]] = {}
        self._closed = False
        self.calls: list[Call] = []

    # ----- the Backend protocol -----

    def ensure_slot(self, deployment: str, release: Release) -> SlotInfo:
        """Record a ready slot for (deployment, release) and return it.

        Idempotent: an up slot is returned as it is; a killed one is brought back up.
        Raises the error queued by :meth:`fail_next_ensure` for this release (the slot is
        then absent, as a real backend removes a half-started one), BackendError once
        closed. Never changes weights.
        """
        key = (deployment, release.id)
        with self._lock:
            self._record("ensure_slot", deployment, release.id)
            if self._closed:
                raise BackendError("the memory backend is closed")
            queued = self._failures.get(release.id)
            if queued:
                error = queued.popleft()
                if not self._slots.get(key, False):
                    self._slots.pop(key, None)
                raise error
            self._slots[key] = True
            return self._info(deployment, release.id)

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        """Replace the deployment's weights with ``routes``, all at once.

        Idempotent. Raises BackendError, leaving the previous weights in place, when the
        weights do not sum to 100, a weight is negative, a release is named twice, a
        routed release has no slot, or a slot given traffic is down.
        """
        with self._lock:
            self._record("set_routes", deployment, tuple(routes))
            self._check_routes(deployment, routes)
            self._routes[deployment] = tuple(routes)

    def retire_slot(self, deployment: str, release_id: int) -> None:
        """Forget the slot and drop its zero-weight route entry.

        Idempotent: an unknown slot is fine. Raises BackendError, changing nothing, while
        the slot still takes traffic.
        """
        with self._lock:
            self._record("retire_slot", deployment, release_id)
            routed = self._routes.get(deployment, ())
            if any(r.release_id == release_id and r.weight > 0 for r in routed):
                raise BackendError(
                    f"release {release_id} still takes traffic on {deployment}: "
                    "route it to 0 before retiring it"
                )
            remaining = tuple(r for r in routed if r.release_id != release_id)
            if remaining:
                self._routes[deployment] = remaining
            else:
                self._routes.pop(deployment, None)
            self._slots.pop((deployment, release_id), None)

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        """``memory://<deployment>/<release>`` and whether the slot is up; None if absent.

        No side effects beyond recording the call; raises nothing.
        """
        with self._lock:
            self._record("slot_info", deployment, release_id)
            if (deployment, release_id) not in self._slots:
                return None
            return self._info(deployment, release_id)

    def data_plane_url(self, deployment: str) -> str | None:
        """The ``data_plane`` template for ``deployment`` (None if there is none). Pure."""
        with self._lock:
            self._record("data_plane_url", deployment)
        if self._data_plane is None:
            return None
        return self._data_plane.format(deployment=deployment)

    def close(self) -> None:
        """Forget every slot and weight; later ensures raise BackendError. Idempotent."""
        with self._lock:
            self._record("close")
            self._closed = True
            self._slots.clear()
            self._routes.clear()

    # ----- the SlotWatcher protocol -----

    def watch_slots(self, callback: SlotLostCallback) -> None:
        """Call ``callback(deployment, release_id)`` from :meth:`kill`. Replaces an earlier
        callback; idempotent; raises nothing."""
        with self._lock:
            self._record("watch_slots")
            self._on_lost = callback

    # ----- the ShadowTraffic protocol -----

    def set_shadow(self, deployment: str, percent: int, max_queue: int = 256) -> None:
        """Record the mirrored share (read it back with :meth:`shadow_percent`).

        Idempotent; 0 stops. Raises InvalidInput for a percent outside 0-100 or a
        ``max_queue`` below 1, BackendError if the deployment has no green route.
        """
        with self._lock:
            self._record("set_shadow", deployment, percent, max_queue)
            check_shadow(percent, max_queue)
            routed = self._routes.get(deployment, ())
            if percent and not any(r.role == "green" for r in routed):
                raise BackendError(
                    f"{deployment} has no green release to mirror to: stage one first"
                )
            if percent:
                self._shadow[deployment] = percent
            else:
                self._shadow.pop(deployment, None)

    def shadow_pairs(self, deployment: str) -> ShadowBatch:
        """Drain what :meth:`push_pair` and :meth:`push_shadow_counts` queued for the
        deployment since the previous call. Raises nothing."""
        with self._lock:
            self._record("shadow_pairs", deployment)
            pairs, dropped, errors = self._shadow_batches.pop(deployment, ([], 0, 0))
        return ShadowBatch(pairs, dropped, errors)

    # ----- test controls and inspection -----

    def push_pair(self, deployment: str, pair: ShadowPair) -> None:
        """Queue a pair for the next :meth:`shadow_pairs`, as if the data plane had
        mirrored it; one with a ``green_error`` counts as a green error, as it would."""
        with self._lock:
            pairs, dropped, errors = self._shadow_batches.get(deployment, ([], 0, 0))
            errors += pair.green_error is not None
            self._shadow_batches[deployment] = ([*pairs, pair], dropped, errors)

    def push_shadow_counts(self, deployment: str, dropped: int = 0, green_errors: int = 0) -> None:
        """Add drops and green errors (without pairs) to the next :meth:`shadow_pairs`."""
        with self._lock:
            pairs, before, errors = self._shadow_batches.get(deployment, ([], 0, 0))
            self._shadow_batches[deployment] = (pairs, before + dropped, errors + green_errors)

    def shadow_percent(self, deployment: str) -> int:
        """The share last given to :meth:`set_shadow` (0 when not mirroring)."""
        with self._lock:
            return self._shadow.get(deployment, 0)

    def fail_next_ensure(self, release_id: int, error: BgserveError | None = None) -> None:
        """Make the next :meth:`ensure_slot` of ``release_id`` raise ``error``.

        ``error`` defaults to a BackendError; pass a ReadinessTimeout (or use
        :meth:`time_out_next_ensure`) for a slot that never gets ready. Calls queue up:
        two calls fail the next two ensures.
        """
        default = BackendError(f"slot of release {release_id} failed to start (injected)")
        with self._lock:
            self._failures.setdefault(release_id, deque()).append(error or default)

    def time_out_next_ensure(self, release_id: int) -> None:
        """Make the next :meth:`ensure_slot` of ``release_id`` raise ReadinessTimeout."""
        message = f"slot of release {release_id} was not ready in time (injected)"
        self.fail_next_ensure(release_id, ReadinessTimeout(message))

    def kill(self, deployment: str, release_id: int) -> None:
        """Simulate the slot dying on its own, as a process watcher would see it.

        The slot goes down and its entry leaves the route (the others keep their weights,
        as a router skipping a dead upstream would), then the watch callback fires outside
        the lock. A later :meth:`ensure_slot` brings it back. Raises KeyError for an
        unknown slot.
        """
        with self._lock:
            self._record("kill", deployment, release_id)
            if (deployment, release_id) not in self._slots:
                raise KeyError(f"no slot of release {release_id} for {deployment}")
            self._slots[(deployment, release_id)] = False
            routed = self._routes.get(deployment, ())
            self._routes[deployment] = tuple(r for r in routed if r.release_id != release_id)
            callback = self._on_lost
        if callback is not None:
            callback(deployment, release_id)

    def routes(self, deployment: str) -> tuple[Route, ...]:
        """The weights currently in place for ``deployment`` (empty if none)."""
        with self._lock:
            return self._routes.get(deployment, ())

    def weights(self, deployment: str) -> dict[int, int]:
        """``{release_id: weight}`` currently in place for ``deployment``."""
        return {r.release_id: r.weight for r in self.routes(deployment)}

    def slots(self) -> dict[tuple[str, int], bool]:
        """Every slot as ``{(deployment, release_id): up}``."""
        with self._lock:
            return dict(self._slots)

    def method_calls(self, *methods: str) -> list[Call]:
        """The recorded calls of the named methods, in order (all calls without names)."""
        with self._lock:
            return [c for c in self.calls if not methods or c.method in methods]

    # ----- internals -----

    def _record(self, method: str, *args: Any) -> None:
        self.calls.append(Call(method, args))

    def _info(self, deployment: str, release_id: int) -> SlotInfo:
        endpoint = self._slot_endpoint.format(deployment=deployment, release_id=release_id)
        return SlotInfo(release_id, endpoint, self._slots[(deployment, release_id)])

    def _check_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        weights = [r.weight for r in routes]
        if sum(weights) != 100 or any(w < 0 for w in weights):
            raise BackendError(f"weights of {deployment} must sum to 100, got {weights}")
        if len({r.release_id for r in routes}) != len(routes):
            raise BackendError(f"routes of {deployment} name a release twice: {list(routes)}")
        for route in routes:
            up = self._slots.get((deployment, route.release_id))
            if up is None:
                raise BackendError(
                    f"release {route.release_id} has no slot for {deployment}: "
                    "ensure the slot before routing to it"
                )
            if route.weight > 0 and not up:
                raise BackendError(
                    f"the slot of release {route.release_id} for {deployment} is down: "
                    f"refusing to give it {route.weight}%"
                )


if TYPE_CHECKING:
    _conforms: type[Backend] = MemoryBackend
    _watches: type[SlotWatcher] = MemoryBackend
    _shadows: type[ShadowTraffic] = MemoryBackend
