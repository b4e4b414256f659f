"""Garbage-collector pauses as Prometheus metrics (see :mod:`bgserve.gcpause`).

Every process exports the same families, told apart by the ``process`` label: the
control process (``bgserve``) and the data plane (``data plane``) on the control API's
``/metrics``, each slot (``slot``) on its own ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bgserve.gcpause import GENERATIONS, PAUSE_BUCKETS_MS, PauseStats


class PauseCollector(Collector):
    """Exports the snapshots ``source()`` returns at scrape time, keyed by process label."""

    def __init__(self, source: Callable[[], Mapping[str, PauseStats]]) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        return metric_families(self.source())


def metric_families(by_process: Mapping[str, PauseStats]) -> Iterator[Metric]:
    """Longest pause and collections per generation, a pause histogram, the CPU time of
    the longest full collection, frozen objects."""
    longest = GaugeMetricFamily(
        "bgserve_gc_longest_pause_seconds",
        "Longest garbage-collector pause since the process finished starting, per generation",
        labels=["process", "generation"],
    )
    collections = CounterMetricFamily(
        "bgserve_gc_collections",
        "Garbage collections since the process finished starting, per generation",
        labels=["process", "generation"],
    )
    pauses = HistogramMetricFamily(
        "bgserve_gc_pause_seconds",
        "Garbage-collector pauses since the process finished starting",
        labels=["process"],
    )
    full_cpu = GaugeMetricFamily(
        "bgserve_gc_longest_full_collection_cpu_seconds",
        "Most CPU time one full collection took since the process finished starting "
        "(beside the wall-time pause, it tells the collector's work from waiting for a CPU)",
        labels=["process"],
    )
    frozen = GaugeMetricFamily(
        "bgserve_gc_frozen_objects",
        "Objects moved out of the collector's reach after start-up (gc.freeze)",
        labels=["process"],
    )
    for process, stats in by_process.items():
        for generation in range(GENERATIONS):
            key = [process, str(generation)]
            longest.add_metric(key, stats["longest_ms"][generation] / 1000)
            collections.add_metric(key, stats["collections"][generation])
        pauses.add_metric([process], _cumulative(stats["buckets"]), stats["total_ms"] / 1000)
        full_cpu.add_metric([process], stats["longest_full_cpu_ms"] / 1000)
        frozen.add_metric([process], stats["frozen"])
    yield from (longest, collections, pauses, full_cpu, frozen)


def _cumulative(counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*PAUSE_BUCKETS_MS, None), counts, strict=True):
        total += count
        out.append(("+Inf" if bound is None else repr(bound / 1000), float(total)))
    return out
