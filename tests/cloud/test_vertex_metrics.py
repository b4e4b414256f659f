"""Cloud Monitoring's time series as bgserve's windows: counters of DELTA and CUMULATIVE
series, latency distributions re-bucketed upwards, and answers that cannot be read."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from google.api import distribution_pb2
from google.api_core import exceptions
from google.cloud import monitoring_v3

from bgserve.app.traffic_reuse import ReadEvery
from bgserve.cloud.vertex.metrics import (
    LATENCIES,
    RESPONSES,
    MonitoringTraffic,
    bucket_bounds,
    latencies,
    rebucket,
    responses,
)
from bgserve.domain.latency import BUCKETS, bucket_of
from bgserve.domain.window import quantile_of
from bgserve.errors import BackendError, Unavailable

T0 = dt.datetime(2026, 5, 4, 12, 0, tzinfo=dt.UTC)
DELTA, CUMULATIVE, GAUGE = 2, 3, 1
Options = distribution_pb2.Distribution.BucketOptions


def minute(n: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def point(end: int, value: Any, start: int | None = None) -> monitoring_v3.Point:
    """A point ending ``end`` minutes after T0 (a DELTA point's minute unless ``start``)."""
    interval = monitoring_v3.TimeInterval(
        start_time=minute(end - 1 if start is None else start), end_time=minute(end)
    )
    typed = (
        monitoring_v3.TypedValue(int64_value=value)
        if isinstance(value, int)
        else monitoring_v3.TypedValue(distribution_value=value)
    )
    return monitoring_v3.Point(interval=interval, value=typed)


def series(
    metric: str,
    points: list[monitoring_v3.Point],
    kind: int = DELTA,
    unit: str = "1",
    **labels: str,
) -> monitoring_v3.TimeSeries:
    return monitoring_v3.TimeSeries(
        metric={"type": metric, "labels": labels},
        metric_kind=kind,
        unit=unit,
        points=list(reversed(points)),  # Cloud Monitoring answers newest first
    )


def distribution(counts: list[int], options: Any) -> distribution_pb2.Distribution:
    return distribution_pb2.Distribution(
        count=sum(counts), bucket_counts=counts, bucket_options=options
    )


def explicit(*bounds: float) -> Any:
    return Options(explicit_buckets=Options.Explicit(bounds=list(bounds)))


# ----- latency distributions -----


def test_each_bucket_goes_whole_to_the_bucket_holding_its_upper_bound() -> None:
    # Cloud Monitoring's buckets: (-inf, 1) [1, 10) [10, 100) [100, +inf)
    found = rebucket(distribution([2, 3, 4, 1], explicit(1.0, 10.0, 100.0)))
    assert len(found) == BUCKETS and sum(found) == 10
    assert found[bucket_of(1.0)] == 2
    assert found[bucket_of(10.0)] == 3
    assert found[bucket_of(100.0)] == 4
    assert found[BUCKETS - 1] == 1  # the overflow bucket: +Inf


def test_rebucketed_quantiles_are_never_below_the_true_ones() -> None:
    # 10 calls at 30 ms and 10 at 300 ms in exponential buckets (1, 2, 4, ... ms)
    options = Options(
        exponential_buckets=Options.Exponential(num_finite_buckets=12, growth_factor=2, scale=1)
    )
    bounds = bucket_bounds(options)
    counts = [0] * (len(bounds) + 1)
    for latency in (30.0, 300.0):
        counts[sum(1 for b in bounds if b <= latency)] += 10
    found = rebucket(distribution(counts, options))
    median, p95 = quantile_of(found, 0.5), quantile_of(found, 0.95)
    assert median is not None and 30.0 <= median <= 32.0 * 1.25
    assert p95 is not None and 300.0 <= p95 <= 512.0 * 1.25


def test_seconds_are_read_as_milliseconds() -> None:
    found = rebucket(distribution([0, 5], explicit(0.2, 0.4)), 1000.0)
    assert found[bucket_of(400.0)] == 5


def test_linear_and_exponential_bounds_follow_their_options() -> None:
    linear = Options(linear_buckets=Options.Linear(num_finite_buckets=3, width=5, offset=10))
    exponential = Options(
        exponential_buckets=Options.Exponential(num_finite_buckets=3, growth_factor=2, scale=0.5)
    )
    assert bucket_bounds(linear) == [10, 15, 20, 25]
    assert bucket_bounds(exponential) == [0.5, 1, 2, 4]


@pytest.mark.parametrize(
    ("counts", "options", "problem"),
    [
        ([1, 2], Options(), "without buckets"),
        ([1, 2, 3, 4], explicit(1.0, 2.0), r"\[1, 2, 3, 4\] for 3 buckets"),
        ([1, 1], explicit(5.0, 5.0), "do not grow"),
    ],
)
def test_distributions_that_cannot_be_read_are_refused(
    counts: list[int], options: Any, problem: str
) -> None:
    with pytest.raises(BackendError, match=problem):
        rebucket(distribution(counts, options))


def test_bucket_counts_that_do_not_add_up_to_the_count_are_refused() -> None:
    broken = distribution_pb2.Distribution(
        count=9, bucket_counts=[1, 2], bucket_options=explicit(1.0)
    )
    with pytest.raises(BackendError, match="distribution of 9 calls"):
        rebucket(broken)


def test_histograms_per_release_add_series_and_skip_other_deployed_models() -> None:
    ten = distribution([0, 10], explicit(50.0))
    found = latencies(
        [
            series(LATENCIES, [point(1, ten), point(2, ten)], unit="ms", deployed_model_id="12"),
            series(LATENCIES, [point(2, ten)], unit="ms", deployed_model_id="12"),
            series(LATENCIES, [point(2, ten)], unit="ms", deployed_model_id="99"),
        ],
        T0,
        frozenset({12, 13}),
    )
    assert set(found) == {12}
    assert found[12][BUCKETS - 1] == 30 and sum(found[12]) == 30
    with pytest.raises(BackendError, match="unit 'h'"):
        latencies([series(LATENCIES, [], unit="h", deployed_model_id="12")], T0, frozenset({12}))


# ----- counters -----


def test_delta_points_after_the_origin_are_summed_and_5xx_are_errors() -> None:
    found = responses(
        [
            series(
                RESPONSES,
                [point(0, 50), point(1, 7), point(2, 5)],
                deployed_model_id="12",
                response_code="200",
            ),
            series(RESPONSES, [point(2, 3)], deployed_model_id="12", response_code="503"),
            series(RESPONSES, [point(2, 4)], deployed_model_id="12", response_code="429"),
            series(RESPONSES, [point(2, 6)], deployed_model_id="13", response_code="200"),
            series(RESPONSES, [point(2, 8)], deployed_model_id="14", response_code="500"),
            series(RESPONSES, [point(2, 8)], deployed_model_id="other", response_code="500"),
        ],
        T0,  # the point ending at T0 is before it
        frozenset({12, 13}),
    )
    assert found == {12: (7 + 5 + 3 + 4, 3), 13: (6, 0)}


def test_cumulative_points_count_their_growth_and_a_reset_from_zero() -> None:
    before, reset = -5, 3
    points = [
        point(1, 100, start=before),
        point(2, 130, start=before),
        point(3, 150, start=before),
        point(4, 4, start=reset),
        point(5, 9, start=reset),
    ]
    found = responses(
        [series(RESPONSES, points, CUMULATIVE, deployed_model_id="12", response_code="200")],
        T0,
        frozenset({12}),
    )
    assert found == {12: (150 - 100 + 9, 0)}


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (series(RESPONSES, [point(1, 1)], response_code="200"), "without deployed_model_id"),
        (series(RESPONSES, [point(1, 1)], deployed_model_id="12"), "without a code"),
        (
            series(RESPONSES, [point(1, 1)], GAUGE, deployed_model_id="12", response_code="200"),
            "GAUGE series",
        ),
    ],
)
def test_series_that_cannot_be_read_are_refused(answer: Any, problem: str) -> None:
    with pytest.raises(BackendError, match=problem):
        responses([answer], T0, frozenset({12}))


# ----- the source -----


class Monitoring:
    """MetricServiceClient.list_time_series answering per metric type, or raising."""

    def __init__(self, answers: dict[str, list[Any]], error: Exception | None = None) -> None:
        self.answers, self.error = answers, error
        self.requests: list[Any] = []

    def list_time_series(self, request: Any, timeout: float) -> list[Any]:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        metric = request.filter.split('"')[1]
        return self.answers.get(metric, [])


def test_windows_hold_requests_errors_and_latency_per_deployed_release() -> None:
    ten = distribution([4, 6], explicit(80.0))
    client = Monitoring(
        {
            RESPONSES: [
                series(RESPONSES, [point(1, 20)], deployed_model_id="12", response_code="200"),
                series(RESPONSES, [point(1, 2)], deployed_model_id="12", response_code="500"),
            ],
            LATENCIES: [series(LATENCIES, [point(1, ten)], unit="ms", deployed_model_id="12")],
        }
    )
    now = [T0 + dt.timedelta(seconds=25)]
    deployed = ("bgserve-chat", frozenset({12, 13}))
    source = MonitoringTraffic(
        client, "proj", "europe-west4", lambda d: deployed, clock=lambda: now[0]
    )
    now[0] = minute(1) + dt.timedelta(seconds=12)
    found = source.windows("chat")
    assert found[12].requests == 22 and found[12].errors == 2
    assert found[12].buckets[bucket_of(80.0)] == 4 and found[12].buckets[-1] == 6
    assert (found[13].requests, found[13].buckets) == (0, (0,) * BUCKETS)
    responses_request, latency_request = client.requests
    assert responses_request.name == "projects/proj"
    assert responses_request.filter == (
        f'metric.type = "{RESPONSES}" AND resource.type = "aiplatform.googleapis.com/Endpoint" '
        'AND resource.labels.endpoint_id = "bgserve-chat" AND resource.labels.location = '
        '"europe-west4"'
    )
    assert latency_request.filter.endswith(' AND metric.labels.latency_type = "total"')
    assert latency_request.interval.start_time == T0  # the minute the source was made
    assert latency_request.interval.end_time == now[0]


def test_a_deployment_without_an_endpoint_asks_cloud_monitoring_nothing() -> None:
    client = Monitoring({})
    assert MonitoringTraffic(client, "p", "l", lambda d: None).windows("chat") == {}
    assert client.requests == []


@pytest.mark.parametrize(
    ("error", "problem"),
    [
        (exceptions.PermissionDenied("no"), "PERMISSION_DENIED: no.*Monitoring Viewer role"),
        (exceptions.ServiceUnavailable("down"), "UNAVAILABLE: down"),
        (exceptions.InvalidArgument("bad filter"), "INVALID_ARGUMENT: bad filter"),
    ],
)
def test_api_errors_become_backend_errors(error: Exception, problem: str) -> None:
    source = MonitoringTraffic(Monitoring({}, error), "p", "l", lambda d: ("e", frozenset({1})))
    with pytest.raises(BackendError, match=problem) as raised:
        source.windows("chat")
    assert isinstance(raised.value, Unavailable)


def test_the_vertex_backend_is_read_through_the_reuse_its_setting_names(
    vertex_api: Any,
) -> None:
    from bgserve.compose.backends import build_traffic_source, vertex_backend
    from bgserve.settings import Settings

    settings = Settings(**vertex_api.settings(vertex_metrics_read_seconds=42))
    clients = vertex_api.clients()
    backend = vertex_backend(settings, clients=clients)
    traffic = build_traffic_source(settings, backend)
    assert isinstance(traffic, ReadEvery) and traffic.seconds == 42
    assert isinstance(traffic.source, MonitoringTraffic)
    assert traffic.source.client is clients.monitoring
    with pytest.raises(ValueError, match="metrics_read_seconds"):
        Settings(vertex_metrics_read_seconds=-1)
