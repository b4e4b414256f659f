"""Prometheus metrics, read at scrape time through the service: the store, and the data
plane's counters (:meth:`~bgserve.app.service.Service.traffic`).

Garbage-collector pauses (``bgserve_gc_*``) are reported for this process
(``process="bgserve"``) and, with the local backend, for the data-plane process
(``process="data plane"``, from its stats reply); each slot reports its own on its
own ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bgserve import gcpause
from bgserve.app.ports import SlotCounters, TrafficReading
from bgserve.app.service import Service
from bgserve.domain.latency import LATENCY_BUCKETS_MS
from bgserve.gcmetrics import metric_families
from bgserve.store import StoredDeployment


class BgserveCollector(Collector):
    """Weights per slot and the plan's state from the store; requests, errors, the latency
    histogram and the chat completions' streaming figures per slot from the data plane."""

    def __init__(self, service: Service, pauses: gcpause.PauseTracker | None = None) -> None:
        self.service = service
        self.pauses = pauses

    def collect(self) -> Iterator[Metric]:
        labels = ["deployment", "slot", "release"]
        weight = GaugeMetricFamily(
            "bgserve_slot_weight", "Routing weight of a slot (0-100)", labels=labels
        )
        deployments = self.service.list_deployments()  # one read of the store a scrape
        for stored in deployments:
            for route in stored.state.routes():
                weight.add_metric(
                    [stored.state.name, route.role, str(route.release_id)], route.weight
                )
        yield weight
        yield from _plans(deployments)
        # One reading of the data plane a scrape: its slots' counters and its GC pauses.
        traffic = self.service.traffic()
        if traffic is not None:
            yield from self._traffic(traffic.slots, labels)
        yield from metric_families(self._pauses(traffic))

    def _pauses(self, traffic: TrafficReading | None) -> dict[str, gcpause.PauseStats]:
        found = {"bgserve": self.pauses.snapshot()} if self.pauses is not None else {}
        if traffic is not None and traffic.pauses is not None:
            found["data plane"] = traffic.pauses
        return found

    @staticmethod
    def _traffic(rows: Sequence[SlotCounters], labels: list[str]) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "bgserve_requests", "Requests answered per slot", labels=labels
        )
        failures = CounterMetricFamily(
            "bgserve_request_errors", "Requests that failed per slot", labels=labels
        )
        latency = HistogramMetricFamily(
            "bgserve_request_latency_seconds",
            "Latency of answered requests per slot, as the data plane measured it",
            labels=labels,
        )
        for row in rows:
            key = [row["deployment"], row["role"], str(row["release_id"])]
            requests.add_metric(key, row["requests"])
            failures.add_metric(key, row["errors"])
            buckets = row.get("latency_buckets")
            if buckets:
                latency.add_metric(key, _cumulative(buckets), sum_value=None)
        yield requests
        yield failures
        yield latency
        yield from _streams(rows, labels)


def _streams(rows: Sequence[SlotCounters], labels: list[str]) -> Iterator[Metric]:
    """The chat completions' figures per slot: time to first token and per output token
    of streamed answers (a slot that streamed none has no series), output tokens."""
    first = HistogramMetricFamily(
        "bgserve_time_to_first_token_seconds",
        "Time from picking the slot to the first content event of a streamed chat answer",
        labels=labels,
    )
    per_token = HistogramMetricFamily(
        "bgserve_time_per_output_token_seconds",
        "Time per output token after the first, per streamed chat answer",
        labels=labels,
    )
    tokens = CounterMetricFamily(
        "bgserve_output_tokens",
        "Output tokens of chat answers (as the slot reported them, else content events)",
        labels=labels,
    )
    for row in rows:
        key = [row["deployment"], row["role"], str(row["release_id"])]
        for family, name in ((first, "ttft_buckets"), (per_token, "tpot_buckets")):
            counts = row.get(name)
            if counts and any(counts):
                family.add_metric(key, _cumulative(counts), sum_value=None)
        if row.get("output_tokens") is not None:
            tokens.add_metric(key, row["output_tokens"])
    yield first
    yield per_token
    yield tokens


def _cumulative(counts: Sequence[int]) -> list[tuple[str, float]]:
    """Prometheus' cumulative ``le`` buckets (seconds) from per-bucket counts."""
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*LATENCY_BUCKETS_MS, float("inf")), counts, strict=False):
        total += count
        out.append(("+Inf" if bound == float("inf") else repr(bound / 1000), float(total)))
    return out


def _plans(deployments: Sequence[StoredDeployment]) -> Iterator[Metric]:
    step = GaugeMetricFamily(
        "bgserve_plan_step_weight",
        "Green weight of the current step of a promotion plan (absent without a plan)",
        labels=["deployment"],
    )
    held = GaugeMetricFamily(
        "bgserve_plan_held", "1 while a plan waits for an operator", labels=["deployment"]
    )
    checks = GaugeMetricFamily(
        "bgserve_plan_check_outcome",
        "Last analysis outcome per check: 1 pass, 0 inconclusive or skipped, -1 fail",
        labels=["deployment", "check"],
    )
    for stored in deployments:
        plan = stored.state.plan
        if plan is None:
            continue
        name = stored.state.name
        step.add_metric([name], plan.weight)
        held.add_metric([name], 1 if plan.held else 0)
        for check in (plan.last_analysis or {}).get("checks", []):
            checks.add_metric([name, check["name"]], _OUTCOME.get(check["outcome"], 0))
    yield step
    yield held
    yield checks


_OUTCOME = {"pass": 1, "fail": -1}


class ShadowReports(Protocol):
    """Where the shadow reports are (the shadow collector)."""

    def reports(self) -> Mapping[str, Any]:
        """Each deployment's shadow report (pairs, dropped, similarity.mean)."""
        ...


class ShadowMetrics(Collector):
    """Mirrored pairs, drops and mean similarity per deployment with a shadow report."""

    def __init__(self, shadow: ShadowReports) -> None:
        self.shadow = shadow

    def collect(self) -> Iterator[Metric]:
        pairs = CounterMetricFamily(
            "bgserve_shadow_pairs", "Mirrored requests scored", labels=["deployment"]
        )
        dropped = CounterMetricFamily(
            "bgserve_shadow_dropped", "Mirror copies dropped (queue full)", labels=["deployment"]
        )
        similarity = GaugeMetricFamily(
            "bgserve_shadow_similarity_mean",
            "Mean green/blue similarity on mirrored traffic",
            labels=["deployment"],
        )
        for name, report in self.shadow.reports().items():
            pairs.add_metric([name], report.pairs)
            dropped.add_metric([name], report.dropped)
            if report.similarity.mean is not None:
                similarity.add_metric([name], report.similarity.mean)
        yield pairs
        yield dropped
        yield similarity


class LeaderStatus(Protocol):
    """This replica's part in leader election."""

    @property
    def is_leader(self) -> bool: ...


class LeaderMetrics(Collector):
    """``bgserve_leader``: 1 on the replica that advances plans and restarts slots."""

    def __init__(self, leadership: LeaderStatus) -> None:
        self.leadership = leadership

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "bgserve_leader",
            "1 when this replica leads (runs the rollout engine and slot recovery), else 0",
            value=1 if self.leadership.is_leader else 0,
        )


class ComparisonLogFailures(Protocol):
    """The comparer's MLflow logger (its count of failed loggings)."""

    failures: int


class ComparisonMetrics(Collector):
    """Comparisons whose MLflow logging failed since this process started."""

    def __init__(self, logger: ComparisonLogFailures) -> None:
        self.logger = logger

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "bgserve_comparison_log_failures",
            "Comparisons whose MLflow logging failed (the verdict stands; history says why)",
            value=self.logger.failures,
        )


def build_registry(
    service: Service,
    shadow: ShadowReports | None = None,
    leadership: LeaderStatus | None = None,
    comparison_log: ComparisonLogFailures | None = None,
) -> CollectorRegistry:
    """A registry of this app's own; the collector-pause tracker is the process's (the
    garbage collector is process-wide), installed here on first use."""
    registry = CollectorRegistry()
    registry.register(BgserveCollector(service, gcpause.install()))
    if shadow is not None:
        registry.register(ShadowMetrics(shadow))
    if leadership is not None:
        registry.register(LeaderMetrics(leadership))
    if comparison_log is not None:
        registry.register(ComparisonMetrics(comparison_log))
    return registry
