"""A control API over a real store and MLflow registry, with slots kept as records.

The in-process backend keeps the local backend's rules (weights sum to 100, a routed
release needs a slot, a slot with traffic cannot be retired) without starting processes,
so API-level tests (auth, hostile input, generated calls) run fast.
"""

from __future__ import annotations

from collections.abc import Sequence

from bgserve.backends.base import SlotInfo
from bgserve.compose import Components, build_components
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError
from bgserve.settings import Settings


class InProcessBackend:
    """Slots as records, with the local backend's checks; every slot answers ready."""

    name = "in-process"

    def __init__(self) -> None:
        self.slots: dict[tuple[str, int], SlotInfo] = {}
        self.routes: dict[str, tuple[Route, ...]] = {}

    def ensure_slot(self, deployment: str, release: Release) -> SlotInfo:
        port = 20000 + len(self.slots)
        info = self.slots.setdefault(
            (deployment, release.id), SlotInfo(release.id, f"http://127.0.0.1:{port}", True)
        )
        return info

    def set_routes(self, deployment: str, routes: Sequence[Route]) -> None:
        if routes and sum(r.weight for r in routes) != 100:
            raise BackendError(f"weights of {deployment} do not sum to 100: {routes}")
        if any((deployment, r.release_id) not in self.slots for r in routes):
            raise BackendError(f"a routed release of {deployment} has no slot")
        self.routes[deployment] = tuple(routes)

    def retire_slot(self, deployment: str, release_id: int) -> None:
        routed = self.routes.get(deployment, ())
        if any(r.release_id == release_id and r.weight > 0 for r in routed):
            raise BackendError(f"release {release_id} still takes traffic on {deployment}")
        self.slots.pop((deployment, release_id), None)

    def slot_info(self, deployment: str, release_id: int) -> SlotInfo | None:
        return self.slots.get((deployment, release_id))

    def data_plane_url(self, deployment: str) -> str | None:
        return f"http://127.0.0.1:1/v2/models/{deployment}/infer"

    def close(self) -> None:
        self.slots.clear()


def build_in_process(settings: Settings) -> Components:
    """``build_components`` with the in-process backend (pass as ``create_app(build=...)``)."""
    return build_components(settings, backend=InProcessBackend())
