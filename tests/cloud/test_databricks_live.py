"""Live analysis on Databricks: clients call the endpoint through the real SDK
(``serving_endpoints.query``), the endpoint's metrics export (read through the SDK's
``export_metrics``) is the traffic source, and a green that fails on long texts is
reverted by the error-rate check on the counts the stand-in exported from the calls it
routed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from bgserve.cloud.databricks.metrics import MetricsExportTraffic
from bgserve.cloud.databricks.names import endpoint_name
from bgserve.compose.backends import build_traffic_source, databricks_backend
from bgserve.domain.window import SideWindow
from bgserve.errors import BackendError
from bgserve.settings import Settings
from tests.support.databricks import DatabricksStandIn
from tests.support.databricks_platform import ModelHost
from tests.support.kube import RELEASES, make_components
from tests.support.live_clients import (
    LiveClients,
    error_rate_plan,
    error_rate_revert,
    stage_flaky_green,
    wait_for_plan_end,
)

pytestmark = pytest.mark.integration


def export_of(api: DatabricksStandIn) -> MetricsExportTraffic:
    return MetricsExportTraffic(api.client(), lambda d: endpoint_name("bgserve-", d))


def test_the_export_counts_each_period_of_the_calls_the_stand_in_routed(
    databricks_api: DatabricksStandIn,
) -> None:
    now = [1000.0]
    databricks_api.metrics_period, databricks_api.clock = 60.0, lambda: now[0]
    backend = databricks_backend(Settings(**databricks_api.settings()), databricks_api.client())
    backend.ensure_slot("chat", RELEASES[1])
    answers = iter([(200, b'{"predictions": ["s"]}')] * 2 + [(400, b'{"error_code": "B"}')])
    databricks_api.on_invoke = lambda endpoint, entity, body: next(answers)
    export = export_of(databricks_api)
    client = databricks_api.client()
    for _ in range(3):
        try:
            client.serving_endpoints.query("bgserve-chat", dataframe_records=[{"text": "t"}])
        except Exception as exc:
            assert "B" in str(getattr(exc, "error_code", "")), exc
    assert export.windows("chat") == {1: SideWindow(0, 0)}  # the minute is not over
    now[0] += 60
    assert export.windows("chat") == {1: SideWindow(3, 1)}
    assert export.windows("chat") == {1: SideWindow(3, 1)}  # the same minute, read again
    now[0] += 60
    assert export.windows("chat") == {1: SideWindow(3, 1)}  # a minute without calls


def test_an_endpoint_that_does_not_exist_has_no_traffic_and_a_bad_name_is_refused(
    databricks_api: DatabricksStandIn,
) -> None:
    assert export_of(databricks_api).windows("nothing") == {}
    path = "/api/2.0/serving-endpoints/bgserve-nothing/metrics"
    refused = [r for r in databricks_api.refused if r[1] == path]
    assert refused == [("GET", path, 404, "RESOURCE_DOES_NOT_EXIST")]
    traffic = MetricsExportTraffic(databricks_api.client(), lambda d: "x" * 64)
    with pytest.raises(BackendError, match="export metrics refused: INVALID_PARAMETER_VALUE"):
        traffic.windows("chat")


def test_the_composition_root_reads_the_export_on_databricks(
    databricks_api: DatabricksStandIn,
) -> None:
    settings = Settings(**databricks_api.settings(databricks_metrics_read_seconds=7))
    source = build_traffic_source(settings, databricks_backend(settings, databricks_api.client()))
    assert isinstance(getattr(source, "source", None), MetricsExportTraffic)
    assert getattr(source, "seconds", None) == 7


def clients_of(client: Any, endpoint: str) -> LiveClients:
    """Live clients calling the endpoint through the SDK, as a user's client does."""
    from databricks.sdk.errors.base import DatabricksError

    def call(text: str) -> str:
        answer = client.serving_endpoints.query(endpoint, dataframe_records=[{"text": text}])
        return str(answer.served_model_name)

    def failure(exc: Exception) -> str | None:
        return str(exc.error_code) if isinstance(exc, DatabricksError) else None

    return LiveClients(call, failure)


@pytest.mark.slow
def test_a_flaky_green_is_reverted_on_the_errors_databricks_exports(
    tmp_path: Path, mlflow_store: str, databricks_api: DatabricksStandIn, databricks: ModelHost
) -> None:
    databricks_api.metrics_period = 0.5  # a minute on Databricks: a bake of seconds here
    flat = databricks_api.settings(
        databricks_metrics_read_seconds=0, slot_ready_timeout_seconds=120
    )
    client = databricks_api.client()
    backend = databricks_backend(Settings(**flat), client)
    extra = {"engine_interval_seconds": 0.1, "leader_election": "off", **flat}
    parts = make_components(tmp_path, mlflow_store, backend, **extra)
    parts.start()
    try:
        service = parts.service
        blue, green = stage_flaky_green(service, mlflow_store, "db")
        with clients_of(client, "bgserve-live") as clients:
            time.sleep(1.0)
            service.start_plan("live", "test", error_rate_plan(), force=True)
            wait_for_plan_end(service, "live")
        check = error_rate_revert(service, "live")
        blue_entity, green_entity = f"release-{blue.id}", f"release-{green.id}"
        assert databricks_api.traffic("bgserve-live") == {blue_entity: 100, green_entity: 0}
        # What failed for the clients was green's: MLflow's scoring server answers a model
        # that raises with 400 BAD_REQUEST, which the export counts as a 4xx.
        assert set(clients.failed) == {"BAD_REQUEST"}
        assert clients.answered[blue_entity] > 0 and clients.answered[green_entity] > 0
        assert check["green_errors"] <= clients.failed["BAD_REQUEST"]
    finally:
        parts.close()
