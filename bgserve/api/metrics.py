"""Prometheus metrics, read at scrape time from the store and the data plane."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bgserve.app.service import Service


@runtime_checkable
class TrafficSource(Protocol):
    """A backend whose data plane counts requests (the local router does)."""

    def traffic_stats(self) -> Sequence[Mapping[str, Any]]:
        """Rows with keys deployment, role, release_id, requests, errors."""
        ...


class BgserveCollector(Collector):
    """Weights per slot from the store; requests and errors per slot from the data plane."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        labels = ["deployment", "slot", "release"]
        weight = GaugeMetricFamily(
            "bgserve_slot_weight", "Routing weight of a slot (0-100)", labels=labels
        )
        for stored in self.service.list_deployments():
            for route in stored.state.routes():
                weight.add_metric(
                    [stored.state.name, route.role, str(route.release_id)], route.weight
                )
        yield weight
        backend = self.service.backend
        if isinstance(backend, TrafficSource):
            yield from self._traffic(backend.traffic_stats(), labels)

    @staticmethod
    def _traffic(rows: Sequence[Mapping[str, Any]], labels: list[str]) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "bgserve_requests", "Requests answered per slot", labels=labels
        )
        failures = CounterMetricFamily(
            "bgserve_request_errors", "Requests that failed per slot", labels=labels
        )
        for row in rows:
            key = [row["deployment"], row["role"], str(row["release_id"])]
            requests.add_metric(key, row["requests"])
            failures.add_metric(key, row["errors"])
        yield requests
        yield failures


def build_registry(service: Service) -> CollectorRegistry:
    """A registry of this app's own (no process-wide globals)."""
    registry = CollectorRegistry()
    registry.register(BgserveCollector(service))
    return registry
