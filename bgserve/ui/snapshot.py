"""What a page reads through the service, once per request: the store, the slot table and
(at most once a second, however many pages poll) the data plane's per-slot counters.

Nothing here sends a request through the data plane: counters come over its control
channel, as ``/metrics`` reads them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bgserve.app.ports import SlotCounters
from bgserve.app.service import Service
from bgserve.domain.release import Release
from bgserve.errors import BgserveError
from bgserve.store import StoredDeployment

log = logging.getLogger("bgserve.ui")

TrafficRows = Sequence[SlotCounters]


@dataclass(frozen=True)
class SlotView:
    """One slot as a page shows it."""

    role: str
    release_id: int
    release: Release | None
    weight: int
    ready: bool


@dataclass(frozen=True)
class DeploymentView:
    """A deployment with its slots resolved to releases and readiness."""

    stored: StoredDeployment
    slots: list[SlotView]

    @property
    def name(self) -> str:
        return self.stored.state.name


class TrafficCache:
    """The data plane's per-slot counters, read at most once per ``ttl_s``."""

    def __init__(self, ttl_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._lock = threading.Lock()
        self._rows: TrafficRows | None = None
        self._read_at = float("-inf")

    def rows(self, service: Service) -> TrafficRows | None:
        """The counters (None when the backend keeps none or cannot be asked now)."""
        with self._lock:
            if self.clock() - self._read_at >= self.ttl_s:
                self._rows = _read(service)
                self._read_at = self.clock()
            return self._rows


def _read(service: Service) -> TrafficRows | None:
    try:
        traffic = service.traffic()
    except (BgserveError, OSError) as exc:
        log.warning("the data plane's counters cannot be read: %s", exc)
        return None
    return None if traffic is None else list(traffic.slots)


def releases_by_id(service: Service) -> dict[int, Release]:
    """Every release by id, in one read of the store."""
    return {release.id: release for release in service.list_releases()}


def view_of(
    service: Service, stored: StoredDeployment, releases: Mapping[int, Release]
) -> DeploymentView:
    """``stored`` with each slot's release and readiness."""
    state = stored.state
    slots = []
    for route in state.routes():
        info = service.slot_info(state.name, route.release_id)
        slots.append(
            SlotView(
                route.role,
                route.release_id,
                releases.get(route.release_id),
                route.weight,
                bool(info and info.ready),
            )
        )
    return DeploymentView(stored, slots)


def all_views(service: Service) -> list[DeploymentView]:
    """Every deployment, sorted by name."""
    releases = releases_by_id(service)
    stored = sorted(service.list_deployments(), key=lambda d: d.state.name)
    return [view_of(service, d, releases) for d in stored]


def slot_counts(rows: TrafficRows | None, name: str) -> list[Mapping[str, Any]]:
    """The counter rows of deployment ``name``."""
    return [row for row in rows or () if row.get("deployment") == name]


def bake_left(until: datetime | None, now: datetime) -> float | None:
    """Seconds of bake left (0 once it ended), None when nothing bakes."""
    return None if until is None else max((until - now).total_seconds(), 0.0)
