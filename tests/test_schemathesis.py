"""Property-based tests of the control API from its own OpenAPI schema: never a 5xx.

The app runs with a real store and a real MLflow registry (SQLite). Slots come from an
in-process backend that keeps the local backend's rules (weights sum to 100, a routed
release needs a slot, a slot with traffic cannot be retired) without starting processes,
so hundreds of generated calls finish in a minute.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings

from bgserve.api.app import create_app
from bgserve.backends.base import SlotInfo
from bgserve.compose import Components, build_components
from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import BackendError
from bgserve.settings import Settings
from tests.flow_helpers import create_releases, deploy, make_settings

EXAMPLES_PER_OPERATION = 40
MIN_CASES = 500
CALLS: list[tuple[str, str, int]] = []


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


def _build(settings: Settings) -> Components:
    return build_components(settings, backend=InProcessBackend())


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[Any]:
    from tests.flow_helpers import register_demo

    register_demo(mlflow_store)
    settings = make_settings(Path(tmp_path_factory.mktemp("fuzz")), mlflow_store)
    settings.promote_step_pause_seconds = 0
    app = create_app(settings, build=_build)
    with TestClient(app) as client:  # runs the lifespan: components stay built
        ids = create_releases(client)
        deploy(client, "chat", ids["v1"], ids["reworded"])
        yield schemathesis.openapi.from_asgi("/openapi.json", app)


def run_operation(operation: Any) -> None:
    """Up to EXAMPLES_PER_OPERATION generated calls of one operation; none may be a 5xx."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def call(case: Any) -> None:
        response = case.call()
        CALLS.append((case.method, case.path, response.status_code))
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
        )

    call()


def test_generated_calls_never_get_a_server_error(
    api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    operations = [result.ok() for result in api.get_all_operations()]
    for operation in operations:
        run_operation(operation)
    routes = {(method, path) for method, path, _ in CALLS}
    statuses = sorted(Counter(status for *_, status in CALLS).items())
    with capsys.disabled():
        print(
            f"\nschemathesis: {len(CALLS)} generated cases over {len(routes)} of "
            f"{len(operations)} operations, 0 5xx; statuses {statuses}"
        )
    assert len(CALLS) >= MIN_CASES and len(routes) == len(operations)
