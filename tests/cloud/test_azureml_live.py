"""Live analysis on Azure ML: clients call the endpoint's scoring URI with its key (split by
the traffic map), the stand-in's Azure Monitor counts what its scoring endpoint routed, and
a green that fails on long texts is reverted by the error-rate check on those counts, read
through the real MetricsQueryClient."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest

from bgserve.cloud.azureml.backend import AzureMLBackend
from bgserve.cloud.azureml.metrics import (
    AGGREGATION,
    GRAIN,
    LOOKBACK,
    METRIC,
    SPLIT,
    MonitorTraffic,
    metrics_client,
    query,
)
from bgserve.cloud.azureml.names import endpoint_name
from bgserve.compose.backends import azureml_backend, build_traffic_source
from bgserve.demo.run import LIVE_TEXTS
from bgserve.errors import BackendError
from bgserve.settings import Settings
from tests.cloud.conftest import AzureML
from tests.support.azureml import AzureMLStandIn, Credential
from tests.support.azureml_platform import HEADER
from tests.support.kube import RELEASES, make_components
from tests.support.live_clients import (
    error_rate_plan,
    error_rate_revert,
    stage_flaky_green,
    wait_for_plan_end,
)
from tests.support.load import Load

pytestmark = pytest.mark.integration


def test_the_composition_root_reads_azure_monitor_on_azure_ml(azure_api: AzureMLStandIn) -> None:
    settings = Settings(**azure_api.settings(azureml_metrics_read_seconds=7))
    source = build_traffic_source(settings, azureml_backend(settings, azure_api.client()))
    assert isinstance(getattr(source, "source", None), MonitorTraffic)
    assert getattr(source, "seconds", None) == 7


def test_the_stand_in_refuses_queries_azure_monitor_refuses(azure_api: AzureMLStandIn) -> None:
    from azure.core.exceptions import HttpResponseError

    backend = azureml_backend(Settings(**azure_api.settings()), azure_api.client())
    assert isinstance(backend, AzureMLBackend)
    backend.ensure_slot("chat", RELEASES[1])
    resource = backend.endpoint_id("chat")
    client = metrics_client(Credential(azure_api.token), transport=azure_api.transport)
    asked: dict[str, Any] = {
        "metric_names": [METRIC],
        "timespan": LOOKBACK,
        "granularity": GRAIN,
        "aggregations": [AGGREGATION],
        "filter": SPLIT,
    }
    for changed, reason in (
        ({"granularity": dt.timedelta(minutes=2)}, "Invalid interval 'PT2M'"),
        ({"metric_names": ["RequestCount"]}, "Failed to find metric configuration"),
        ({"filter": "region eq '*'"}, "has no dimension region"),
        ({"aggregations": ["P99"]}, "Invalid aggregation 'P99'"),
    ):
        with pytest.raises(HttpResponseError, match=reason) as refused:
            client.query_resource(resource, **{**asked, **changed})
        assert refused.value.status_code == 400
    monitor = [r[2:] for r in azure_api.refused if "Insights" in r[1]]
    assert monitor == [(400, "BadRequest")] * 4
    stranger = metrics_client(Credential("not-the-token"), transport=azure_api.transport)
    with pytest.raises(BackendError, match="no usable Azure credential"):
        query(stranger, resource)
    assert query(client, backend.endpoint_id("nothing")) is None
    assert MonitorTraffic(client, backend.endpoint_id).windows("chat") == {}  # no calls yet


@pytest.mark.slow
def test_a_flaky_green_is_reverted_on_the_errors_azure_monitor_counts(
    tmp_path: Path, mlflow_store: str, azureml: AzureML
) -> None:
    azureml.api.monitor.minute_seconds = 0.5  # Azure's minute: a bake of seconds here
    flat = azureml.api.settings(azureml_metrics_read_seconds=0, slot_ready_timeout_seconds=120)
    backend = azureml_backend(Settings(**flat), azureml.api.client())
    extra = {"engine_interval_seconds": 0.1, "leader_election": "off", **flat}
    parts = make_components(tmp_path, mlflow_store, backend, **extra)
    parts.start()
    try:
        service = parts.service
        blue, green = stage_flaky_green(service, mlflow_store, "az")
        plan = error_rate_plan()
        url = backend.data_plane_url("live")
        endpoint = endpoint_name("bgserve-", "live")
        assert url is not None
        key = {"Authorization": f"Bearer {azureml.api.keys[endpoint][0]}"}
        with Load(url, 2, texts=LIVE_TEXTS, headers=key, release_header=HEADER) as load:
            time.sleep(0.5)
            service.start_plan("live", "test", plan, force=True)
            wait_for_plan_end(service, "live")
        check = error_rate_revert(service, "live")
        assert azureml.api.traffic(endpoint) == {f"release-{blue.id}": 100}
        # What failed for the clients was green's; the errors counted are among those.
        failed = load.failures()
        assert failed and {c.release for c in failed} == {f"release-{green.id}"}
        assert check["green_errors"] <= len(failed)
        # Every metrics query bgserve sent passed the stand-in's checks.
        assert [r for r in azureml.api.refused if "Insights" in r[1]] == []
        assert azureml.api.monitor.queries
    finally:
        parts.close()
