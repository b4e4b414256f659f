"""Live analysis on Vertex AI: clients call the endpoint's invoke API (split by the traffic
split, with a Google token), the stand-in's Cloud Monitoring counts what its dedicated
endpoint routed, and a green that fails on long texts is reverted by the error-rate check
on those counts, read through the real MetricServiceClient."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bgserve.cloud.vertex.names import endpoint_name
from bgserve.compose.backends import vertex_backend
from bgserve.demo.run import LIVE_TEXTS
from bgserve.settings import Settings
from tests.cloud.conftest import Vertex
from tests.support.kube import make_components
from tests.support.live_clients import (
    error_rate_plan,
    error_rate_revert,
    stage_flaky_green,
    wait_for_plan_end,
)
from tests.support.load import Load
from tests.support.vertex_platform import HEADER

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_flaky_green_is_reverted_on_the_errors_cloud_monitoring_counts(
    tmp_path: Path, mlflow_store: str, vertex: Vertex
) -> None:
    # Points of a second, published as each ends: Vertex's minute would need minutes of bake.
    vertex.api.monitoring.period = 1.0
    flat = vertex.api.settings(vertex_metrics_read_seconds=0, slot_ready_timeout_seconds=120)
    settings = Settings(**flat)
    backend = vertex_backend(settings, clients=vertex.api.clients(vertex.credentials))
    extra = {"engine_interval_seconds": 0.1, "leader_election": "off", **flat}
    parts = make_components(tmp_path, mlflow_store, backend, **extra)
    parts.start()
    try:
        service = parts.service
        blue, green = stage_flaky_green(service, mlflow_store, "vx")
        plan = error_rate_plan()
        url = backend.data_plane_url("live")
        assert url is not None
        token = {"Authorization": f"Bearer {vertex.credentials.token}"}
        with Load(url, 2, texts=LIVE_TEXTS, headers=token, release_header=HEADER) as load:
            time.sleep(0.5)
            service.start_plan("live", "test", plan, force=True)
            wait_for_plan_end(service, "live")
        check = error_rate_revert(service, "live")
        endpoint = endpoint_name(settings.vertex.name_prefix, "live")
        assert vertex.api.split(endpoint) == {str(blue.id): 100}
        # What failed for the clients was green's; the errors counted are among those.
        failed = load.failures()
        assert failed and {(c.status, c.release) for c in failed} == {(500, str(green.id))}
        assert check["green_errors"] <= len(failed)
        # Every ListTimeSeries bgserve sent passed the stand-in's checks.
        assert [r for r in vertex.api.refused if r[0] == "list_time_series"] == []
    finally:
        parts.close()
