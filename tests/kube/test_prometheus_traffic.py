"""PrometheusTraffic against a real Prometheus scraping an exporter the test controls."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bgserve.domain.analysis import AnalysisSettings, Outcome, analyse
from bgserve.domain.latency import LATENCY_BUCKETS_MS, bucket_of
from bgserve.domain.window import SideWindow, histogram
from bgserve.errors import InvalidInput, Unavailable
from bgserve.kube.kserve.objects import isvc_name
from bgserve.kube.prometheus import PrometheusTraffic
from bgserve.kube.prometheus_queries import WorkloadNames, cumulative_to_buckets
from bgserve.settings import KubeGroup, Settings
from tests.support.prometheus import Exporter, PrometheusServer, prometheus_with_exporter

pytestmark = pytest.mark.integration

NAMESPACE = "models"
SCRAPED_WITHIN_S = 30.0

Windows = Mapping[int, SideWindow]


@pytest.fixture(scope="module")
def prom() -> Iterator[tuple[PrometheusServer, Exporter]]:
    with prometheus_with_exporter() as pair:
        yield pair


def _settings(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    fields: dict[str, Any] = {
        "home": tmp_path,
        "backend": "kserve",
        "kube_namespace": NAMESPACE,
        "prometheus_url": url,
        **overrides,
    }
    return Settings(**fields)


def _on(settings: Settings) -> tuple[KubeGroup, str]:
    """PrometheusTraffic's arguments, as the composition root passes them."""
    return settings.kube, settings.backend


def _predictor(deployment: str, release_id: int) -> str:
    return f"{isvc_name(deployment, release_id)}-predictor"


def _read_until(
    traffic: PrometheusTraffic, deployment: str, done: Callable[[Windows], bool]
) -> Windows:
    """Read until ``done`` holds (Prometheus scrapes every second); the last reading."""
    deadline = time.monotonic() + SCRAPED_WITHIN_S
    reading = traffic.windows(deployment)
    while not done(reading) and time.monotonic() < deadline:
        time.sleep(0.25)
        reading = traffic.windows(deployment)
    return reading


def _requests(reading: Windows) -> dict[int, int]:
    return {release: side.requests for release, side in reading.items()}


def test_istio_counts_come_back_per_release(
    prom: tuple[PrometheusServer, Exporter], tmp_path: Path
) -> None:
    server, exporter = prom
    blue, green = _predictor("shop", 1), _predictor("shop", 2)
    exporter.istio(NAMESPACE, blue, 950, 5, latency_ms=20.0)
    exporter.istio(NAMESPACE, blue, 50, 0, latency_ms=80.0)
    # Knative mode: the workload is a revision of the predictor; revisions add up.
    exporter.istio(NAMESPACE, f"{green}-00001-deployment", 100, 20, latency_ms=40.0)
    exporter.istio(NAMESPACE, f"{green}-00002-deployment", 100, 20, latency_ms=400.0)
    # Neither another namespace nor a deployment whose name extends "shop" may count.
    exporter.istio("staging", blue, 5000, 0, latency_ms=1.0)
    exporter.istio(NAMESPACE, _predictor("shopx", 1), 700, 700, latency_ms=1.0)
    traffic = PrometheusTraffic(*_on(_settings(tmp_path, server.url)))

    reading = _read_until(traffic, "shop", lambda r: _requests(r) == {1: 1000, 2: 200})

    assert reading == {
        1: SideWindow(1000, 5, histogram([25.0] * 950 + [100.0] * 50)),
        2: SideWindow(200, 40, histogram([50.0] * 100 + [500.0] * 100)),
    }
    # Istio's buckets are coarser than bgserve's: a p95 is read at most one Istio bucket
    # (plus one bgserve bucket, 25%) above the true one, never below it.
    blue_p95, green_p95 = reading[1].quantile_ms(0.95), reading[2].quantile_ms(0.95)
    assert blue_p95 is not None and 20.0 <= blue_p95 <= 25.0 * 1.25
    assert green_p95 is not None and 400.0 <= green_p95 <= 500.0 * 1.25
    traffic.close()


def test_two_readings_give_the_window_and_analysis_fails_green_on_errors(
    prom: tuple[PrometheusServer, Exporter], tmp_path: Path
) -> None:
    server, exporter = prom
    # Long enough to be cut and hashed to fit a DNS label: the workload regex is then an
    # alternation, which Prometheus' RE2 must accept.
    deployment = "recommendations-for-the-front-page-of-the-store"
    blue, green = _predictor(deployment, 11), _predictor(deployment, 12)
    exporter.istio(NAMESPACE, blue, 300, 1, latency_ms=20.0)
    exporter.istio(NAMESPACE, green, 60, 1, latency_ms=20.0)
    traffic = PrometheusTraffic(*_on(_settings(tmp_path, server.url)))
    before = _read_until(traffic, deployment, lambda r: _requests(r) == {11: 300, 12: 60})
    assert _requests(before) == {11: 300, 12: 60}

    exporter.istio(NAMESPACE, blue, 1000, 5, latency_ms=20.0)
    exporter.istio(NAMESPACE, green, 200, 40, latency_ms=22.0)
    after = _read_until(traffic, deployment, lambda r: _requests(r) == {11: 1300, 12: 260})
    blue_window, green_window = after[11].minus(before[11]), after[12].minus(before[12])

    assert blue_window == SideWindow(1000, 5, histogram([25.0] * 1000))
    assert green_window == SideWindow(200, 40, histogram([25.0] * 200))
    analysis = analyse(blue_window, green_window, AnalysisSettings())
    assert analysis.outcome is Outcome.FAIL
    assert [c.name for c in analysis.failed] == ["error_rate"]
    assert analysis.failed[0].numbers["green_errors"] == 40
    assert analysis.failed[0].numbers["p_value"] < 0.05
    traffic.close()


def test_seldon_counts_errors_by_status_code(
    prom: tuple[PrometheusServer, Exporter], tmp_path: Path
) -> None:
    server, exporter = prom
    for model, code, count in [
        ("infer-r1", "200", 297),
        ("infer-r1", "500", 3),
        ("infer-r2", "200", 90),
        ("infer-r2", "503", 10),
        ("infer-r2", "404", 5),
        ("infer-r2x", "500", 50),
        ("other-r1", "500", 50),
    ]:
        exporter.seldon(model, code, count)
    settings = _settings(tmp_path, server.url, backend="seldon", prometheus_router="seldon")
    traffic = PrometheusTraffic(*_on(settings))

    reading = _read_until(traffic, "infer", lambda r: _requests(r) == {1: 300, 2: 105})

    # Seldon's latency histogram has no model label: no histogram per release.
    assert reading == {1: SideWindow(300, 3, ()), 2: SideWindow(105, 10, ())}
    traffic.close()


def test_prometheus_down_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    traffic = PrometheusTraffic(*_on(_settings(tmp_path, f"http://127.0.0.1:{port}")))

    with pytest.raises(Unavailable, match="cannot be reached for prometheus_requests_query"):
        traffic.windows("shop")


def test_a_promql_error_is_unavailable_with_prometheus_message(
    prom: tuple[PrometheusServer, Exporter], tmp_path: Path
) -> None:
    server, _ = prom
    bad = 'rate(istio_requests_total{destination_workload=~"{workload}"})'
    traffic = PrometheusTraffic(*_on(_settings(tmp_path, server.url, prometheus_errors_query=bad)))

    with pytest.raises(Unavailable) as caught:
        traffic.windows("shop")

    message = caught.value.message
    assert "prometheus_errors_query" in message
    assert "expected type range vector" in message  # Prometheus' own words


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"prometheus_latency_bucket_query": 'x_bucket{w=~"{release}"}'}, None, "{release}"),
        ({"prometheus_url": ""}, "prometheus_url", "BGSERVE_PROMETHEUS_URL"),
        ({"prometheus_workload_label": "bad-label"}, "prometheus_workload_label", "bad-label"),
        (
            {"backend": "seldon", "seldon_flavour": "v1", "prometheus_router": "seldon"},
            "prometheus_router",
            "v1",
        ),
        ({"backend": "local"}, "backend", "local"),
    ],
)
def test_bad_settings_are_refused_at_start(
    tmp_path: Path, overrides: dict[str, Any], field: str | None, words: str
) -> None:
    settings = _settings(tmp_path, "http://127.0.0.1:9", **overrides)

    with pytest.raises(InvalidInput) as caught:
        PrometheusTraffic(*_on(settings))

    assert caught.value.field == (field or "prometheus_latency_bucket_query")
    assert words in caught.value.message


def test_cumulative_buckets_in_seconds_map_onto_bgserve_buckets() -> None:
    # Seldon's default buckets (seconds), cumulative, with +Inf.
    cumulative = {0.005: 10.0, 0.01: 30.0, 0.025: 30.0, 0.1: 34.0, float("inf"): 35.0}

    buckets = cumulative_to_buckets(cumulative, unit_ms=1000.0)

    expected = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    expected[bucket_of(5.0)] += 10
    expected[bucket_of(10.0)] += 20
    expected[bucket_of(100.0)] += 4
    expected[-1] += 1
    assert buckets == tuple(expected)
    assert cumulative_to_buckets({}, unit_ms=1.0) == ()


def test_a_cumulative_dip_between_scrapes_counts_as_no_traffic() -> None:
    buckets = cumulative_to_buckets({1.0: 10.0, 5.0: 9.0, float("inf"): 12.0}, unit_ms=1.0)

    assert buckets[bucket_of(1.0)] == 10
    assert buckets[bucket_of(5.0)] == 0
    assert buckets[-1] == 2


def test_release_ids_are_read_back_only_from_the_deployments_own_names() -> None:
    names = WorkloadNames(_predictor)
    long = "x" * 60  # cut and hashed, differently for ids of different lengths

    assert names.release_of(long, _predictor(long, 7)) == 7
    assert names.release_of(long, f"httproute/ns/r/rule/0/{_predictor(long, 12345)}") == 12345
    assert names.release_of("shop", "shop-r3-predictor-00002-deployment") == 3
    assert names.release_of("shop", "myshop-r3-predictor") is None
    assert names.release_of("shop", "shop-r007-predictor") is None
    assert names.release_of("shop", _predictor("shop-r3-predictor-a", 1)) is None


def test_in_routing_group_mode_members_workloads_count_beside_predictors() -> None:
    import re

    from bgserve.kube.prometheus_queries import workload_names
    from bgserve.settings import Settings

    grouped = workload_names(Settings(kserve_llm_mode="llminferenceservice").kube, "kserve")
    assert grouped.release_of("shop", "shop-r3-kserve-7d9f8c-x2x4z") == 3
    assert grouped.release_of("shop", "shop-r4-predictor-00001-deployment") == 4
    assert grouped.release_of("myshop", "shop-r3-kserve") is None
    pattern = grouped.pattern("shop")
    assert re.fullmatch(pattern, "shop-r12-kserve") and re.fullmatch(pattern, "shop-r1-predictor")
    classic = workload_names(Settings().kube, "kserve")
    assert classic.release_of("shop", "shop-r3-kserve-7d9f8c-x2x4z") is None
