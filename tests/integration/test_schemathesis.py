"""Property-based tests of the control API from its own OpenAPI schema: never a 5xx.

The app runs with a real store and a real MLflow registry (SQLite). Slots come from the
in-process backend of :mod:`tests.support.inprocess_api`, so hundreds of generated calls finish
in a minute.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings

from bgserve.api.app import create_app
from tests.support.flow import create_releases, deploy, make_settings
from tests.support.inprocess_api import build_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLES_PER_OPERATION = 40
MIN_CASES = 500
# A loopback name: without tokens bgserve refuses other hosts (schemathesis says testserver).
LOCAL = "http://127.0.0.1"
CALLS: list[tuple[str, str, int]] = []


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[Any]:
    from tests.support.flow import register_demo

    register_demo(mlflow_store)
    settings = make_settings(Path(tmp_path_factory.mktemp("fuzz")), mlflow_store)
    settings.plan.bake_s = 0
    app = create_app(settings, build=build_in_process)
    # Entering the client runs the lifespan: components stay built.
    with TestClient(app, base_url=LOCAL) as client:
        ids = create_releases(client)
        deploy(client, "chat", ids["v1"], ids["reworded"])
        yield schemathesis.openapi.from_asgi("/openapi.json", app, headers={"host": "127.0.0.1"})


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
        response = case.call(base_url=LOCAL)
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
