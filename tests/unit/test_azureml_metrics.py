"""Reading Azure Monitor's RequestsPerMinute into counts per release: each minute counted
once at its latest value, deployments bgserve did not name left out, answers not split as
asked refused with a reason, and the SDK's errors translated (403 names the role)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.monitor.query import MetricsQueryResult

from bgserve.cloud.azureml.metrics import LOOKBACK, METRIC, MonitorTraffic, minute_counts
from bgserve.domain.window import SideWindow
from bgserve.errors import BackendError, Unavailable

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
Minutes = Mapping[tuple[str, str], Mapping[int, float]]


def answer(minutes: Minutes, split: bool = True, metric: str = METRIC) -> Any:
    """A MetricsQueryResult as the SDK makes it of Azure Monitor's REST answer: per
    (deployment, status code class), the calls of each minute after T0."""
    series = [
        {
            "metadatavalues": (
                [
                    {"name": {"value": "deployment"}, "value": deployment},
                    {"name": {"value": "statuscodeclass"}, "value": status_class},
                ]
                if split
                else []
            ),
            "data": [
                {"timeStamp": (T0 + dt.timedelta(minutes=m)).isoformat(), "total": calls}
                for m, calls in sorted(counts.items())
            ],
        }
        for (deployment, status_class), counts in minutes.items()
    ]
    metric_body = {"name": {"value": metric}, "unit": "Count", "timeseries": series}
    body = {"timespan": "x/y", "interval": "PT1M", "value": [metric_body]}
    return MetricsQueryResult._from_generated(body)


class Client:
    """A MetricsQueryClient answering the next of ``answers`` (raising an exception one)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, dict[str, Any]]] = []

    def query_resource(self, resource: str, **kw: Any) -> Any:
        self.asked.append((resource, kw))
        found = self.answers.pop(0)
        if isinstance(found, Exception):
            raise found
        return found


def traffic(*answers: Any) -> tuple[MonitorTraffic, Client]:
    client = Client(*answers)
    return MonitorTraffic(client, lambda d: f"/endpoints/bgserve-{d}"), client


def test_each_minute_counts_once_at_its_latest_value() -> None:
    first = {("release-1", "2xx"): {0: 8, 1: 3}, ("release-1", "4xx"): {1: 1}}
    # minute 1 is read again once Azure ingested more of it; minute 2 is new
    later = {("release-1", "2xx"): {0: 8, 1: 6, 2: 4}, ("release-1", "4xx"): {1: 2, 2: 1}}
    source, client = traffic(answer(first), answer(first), answer(later))
    assert source.windows("chat") == {1: SideWindow(12, 1)}
    assert source.windows("chat") == {1: SideWindow(12, 1)}
    assert source.windows("chat") == {1: SideWindow(21, 3)}
    resource, asked = client.asked[0]
    assert resource == "/endpoints/bgserve-chat"
    assert asked["filter"] == "deployment eq '*' and statusCodeClass eq '*'"
    assert asked["metric_names"] == [METRIC] and asked["aggregations"] == ["Total"]


def test_minutes_that_leave_the_lookback_stay_in_the_totals() -> None:
    span = int(LOOKBACK.total_seconds() // 60)
    early = {("release-2", "2xx"): {0: 5}, ("release-2", "5xx"): {0: 2}}
    late = {("release-2", "2xx"): {span + 3: 1}}  # minute 0 is no longer answered
    source, _ = traffic(answer(early), answer(late), answer(late))
    assert source.windows("chat") == {2: SideWindow(7, 2)}
    assert source.windows("chat") == {2: SideWindow(8, 2)}
    assert source.windows("chat") == {2: SideWindow(8, 2)}


def test_deployments_bgserve_did_not_name_are_left_out() -> None:
    minutes = {
        ("release-3", "2xx"): {0: 2},
        ("blue", "5xx"): {0: 9},
        ("release-0", "2xx"): {0: 9},
        ("", "4xx"): {0: 4},
    }
    assert minute_counts(answer(minutes)) == {(3, T0): (2.0, 0.0)}


def test_the_status_classes_of_a_minute_are_summed_and_only_4xx_5xx_are_errors() -> None:
    minutes = {("release-4", c): {0: 1} for c in ("2xx", "3xx", "4xx", "5xx")}
    assert minute_counts(answer(minutes)) == {(4, T0): (4.0, 2.0)}


def test_answers_not_split_as_asked_are_refused_with_a_reason() -> None:
    with pytest.raises(BackendError, match="not split by deployment and statusCodeClass"):
        minute_counts(answer({("release-1", "2xx"): {0: 1}}, split=False))
    with pytest.raises(BackendError, match="answered no RequestsPerMinute"):
        minute_counts(answer({("release-1", "2xx"): {0: 1}}, metric="RequestLatency"))


def test_the_sdk_errors_become_backend_errors_and_a_missing_endpoint_has_no_traffic() -> None:
    forbidden = HttpResponseError(message="AuthorizationFailed: no access")
    forbidden.status_code = 403
    bad = HttpResponseError(message="Invalid interval")
    bad.status_code = 400
    source, _ = traffic(
        ResourceNotFoundError(message="gone"),
        forbidden,
        bad,
        ServiceRequestError("connection refused"),
    )
    assert source.windows("chat") == {}
    with pytest.raises(BackendError, match="Monitoring Reader"):
        source.windows("chat")
    with pytest.raises(BackendError, match=r"refused: HTTP 400: .*Invalid interval"):
        source.windows("chat")
    with pytest.raises(Unavailable, match="failed: connection refused"):
        source.windows("chat")
