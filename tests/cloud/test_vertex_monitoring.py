"""The stand-in's Cloud Monitoring through the real MetricServiceClient: requests checked as
Cloud Monitoring checks them, and the calls it observed answered as Vertex AI's series."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from google.api_core import exceptions
from google.cloud import monitoring_v3

from bgserve.cloud.vertex.metrics import LATENCIES, RESPONSES, series_filter
from tests.support.vertex import LOCATION, PROJECT, PROJECT_NUMBER, VertexStandIn

pytestmark = pytest.mark.integration
NOW = dt.datetime.now(dt.UTC)
HOUR = monitoring_v3.TimeInterval(start_time=NOW - dt.timedelta(hours=1), end_time=NOW)


def ask(api: VertexStandIn, **fields: Any) -> list[Any]:
    request = {
        "name": f"projects/{PROJECT}",
        "filter": series_filter(RESPONSES, "bgserve-chat", LOCATION),
        "interval": HOUR,
        **fields,
    }
    return list(api.clients().monitoring.list_time_series(request=request))


def test_observed_calls_come_back_as_delta_series_per_code_and_latency(
    vertex_api: VertexStandIn,
) -> None:
    vertex_api.monitoring.clock = lambda: NOW.timestamp() - 120
    for status, ms in ((200, 30.0), (200, 3.0), (500, 300.0)):
        vertex_api.monitoring.record("bgserve-chat", "12", status, ms)
    vertex_api.monitoring.record("bgserve-other", "12", 200, 5.0)
    vertex_api.monitoring.clock = lambda: NOW.timestamp()
    codes = {s.metric.labels["response_code"]: s for s in ask(vertex_api)}
    assert set(codes) == {"200", "500"}
    ok = codes["200"]
    assert (ok.metric_kind, ok.resource.labels["endpoint_id"]) == (2, "bgserve-chat")
    assert [p.value.int64_value for p in ok.points] == [2]
    (latency,) = ask(
        vertex_api,
        name=f"projects/{PROJECT_NUMBER}",
        filter=series_filter(LATENCIES, "bgserve-chat", LOCATION, {"latency_type": "total"}),
    )
    (only,) = latency.points
    assert latency.unit == "ms" and only.value.distribution_value.count == 3
    assert (
        ask(vertex_api, interval={"start_time": NOW - dt.timedelta(seconds=30), "end_time": NOW})
        == []
    )


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"name": "projects/someone-else"}, "Name must begin"),
        ({"name": f"projects/{PROJECT}/locations/{LOCATION}"}, "Name must begin"),
        (
            {"filter": f'metric.type = "{RESPONSES}"'},
            "must name resource.type, resource.labels.endpoint_id",
        ),
        (
            {"filter": series_filter("aiplatform.googleapis.com/nothing", "e", LOCATION)},
            "Cannot find metric.*nothing",
        ),
        ({"filter": "metric.type = response_count"}, "cannot be parsed"),
        ({"interval": {"start_time": NOW}}, "interval.end_time is required"),
        (
            {"interval": {"start_time": NOW, "end_time": NOW - dt.timedelta(minutes=1)}},
            "must not be later",
        ),
    ],
)
def test_requests_cloud_monitoring_refuses_are_invalid_arguments(
    vertex_api: VertexStandIn, fields: dict[str, Any], problem: str
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match=problem):
        ask(vertex_api, **fields)
