"""Reading Databricks' metrics export into counts per release: each minute's gauges added
once, counters read as cumulative with their resets, foreign entities left out, and text
that cannot be read refused with a reason."""

from __future__ import annotations

from typing import Any

import pytest

from bgserve.cloud.databricks.metrics import MetricsExportTraffic, parse_export
from bgserve.domain.window import SideWindow
from bgserve.errors import BackendError, Unavailable

MINUTE_MS = 60_000


def minute(stamp_ms: int, counts: dict[str, tuple[int, int, int]]) -> str:
    """An export as Databricks answers it: per entity, the last minute's requests, 4xx and
    5xx as gauges stamped with that minute, and gauges bgserve does not read."""
    lines = []
    for index, metric in enumerate(
        ("request_count_total", "request_4xx_count_total", "request_5xx_count_total")
    ):
        lines += [f"# HELP {metric} Count during the last minute.", f"# TYPE {metric} gauge"]
        for entity, values in counts.items():
            labels = f'endpoint_name="bgserve-chat",served_entity_name="{entity}"'
            lines.append(f"{metric}{{{labels}}} {values[index]} {stamp_ms}")
    lines += ["# TYPE cpu_usage_percentage gauge", f"cpu_usage_percentage 2.3 {stamp_ms}"]
    lines += ["# TYPE request_latency_ms histogram", 'request_latency_ms_bucket{le="+Inf"} 3']
    lines += ["request_latency_ms_count 3", "request_latency_ms_sum 120.0"]
    return "\n".join(lines) + "\n"


class Contents:
    """The SDK's streamed body of an ExportMetricsResponse."""

    def __init__(self, text: str) -> None:
        self.text = text

    def read(self, n: int = -1) -> bytes:
        return self.text.encode()


class Exports:
    """``serving_endpoints`` of a WorkspaceClient whose export answers ``texts`` in turn."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.asked: list[str] = []

    def export_metrics(self, name: str) -> Any:
        self.asked.append(name)
        return type("ExportMetricsResponse", (), {"contents": Contents(self.texts.pop(0))})()


def traffic_of(texts: list[str]) -> tuple[MetricsExportTraffic, Exports]:
    exports = Exports(texts)
    client = type("WorkspaceClient", (), {"serving_endpoints": exports})()
    return MetricsExportTraffic(client, lambda deployment: f"bgserve-{deployment}"), exports


def test_requests_and_4xx_and_5xx_errors_per_release_from_one_minute() -> None:
    counts = parse_export(minute(MINUTE_MS, {"release-3": (50, 2, 1), "release-4": (40, 0, 0)}))
    assert {key: count.value for key, count in counts.items()} == {
        (3, "request_count_total"): 50.0,
        (3, "request_4xx_count_total"): 2.0,
        (3, "request_5xx_count_total"): 1.0,
        (4, "request_count_total"): 40.0,
        (4, "request_4xx_count_total"): 0.0,
        (4, "request_5xx_count_total"): 0.0,
    }
    assert {count.stamp for count in counts.values()} == {60.0}


def test_each_minute_is_added_once_however_often_the_export_is_read() -> None:
    first = minute(MINUTE_MS, {"release-3": (50, 2, 1)})
    second = minute(2 * MINUTE_MS, {"release-3": (30, 0, 3)})
    traffic, exports = traffic_of([first, first, second, second])
    readings = [traffic.windows("chat") for _ in range(4)]
    assert [r[3] for r in readings] == [
        SideWindow(50, 3),
        SideWindow(50, 3),
        SideWindow(80, 6),
        SideWindow(80, 6),
    ]
    assert exports.asked == ["bgserve-chat"] * 4
    assert readings[3][3].minus(readings[1][3]) == SideWindow(30, 3)


def test_a_counter_family_is_cumulative_and_a_drop_is_a_reset() -> None:
    def counters(requests: int, errors: int) -> str:
        labels = 'served_entity_name="release-7"'
        return (
            "# TYPE request_count_total counter\n"
            f"request_count_total{{{labels}}} {requests}\n"
            "# TYPE request_5xx_count_total counter\n"
            f"request_5xx_count_total{{{labels}}} {errors}\n"
        )

    traffic, _ = traffic_of([counters(100, 4), counters(130, 5), counters(20, 1)])
    readings = [traffic.windows("chat")[7] for _ in range(3)]
    # The entity restarted between the second and third reading: its 20 calls are new.
    assert readings == [SideWindow(100, 4), SideWindow(130, 5), SideWindow(150, 6)]


def test_entities_bgserve_did_not_name_and_unlabelled_samples_are_left_out() -> None:
    text = minute(MINUTE_MS, {"champion": (90, 9, 9), "release-03": (5, 0, 0)})
    text += "# TYPE request_count_total gauge\nrequest_count_total 999 60000\n"
    assert parse_export(text) == {}
    traffic, _ = traffic_of([minute(MINUTE_MS, {"champion": (9, 9, 9), "release-2": (4, 0, 1)})])
    assert traffic.windows("chat") == {2: SideWindow(4, 1)}


def test_text_that_is_not_prometheus_text_is_refused_with_a_reason() -> None:
    traffic, _ = traffic_of(['request_count_total{served_entity_name="release-1" 5\n'])
    with pytest.raises(BackendError, match="metrics export is not Prometheus text") as caught:
        traffic.windows("chat")
    assert isinstance(caught.value, Unavailable)


def test_per_minute_counts_without_a_timestamp_are_refused_not_summed_twice() -> None:
    text = "# TYPE request_count_total gauge\n"
    text += 'request_count_total{served_entity_name="release-1"} 5\n'
    with pytest.raises(BackendError, match="without a timestamp"):
        parse_export(text)
