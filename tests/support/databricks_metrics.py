"""The Databricks stand-in's metrics export: ``GET /api/2.0/serving-endpoints/<name>/metrics``
answering, per served entity of the endpoint's config, the calls the stand-in itself routed
to it.

As Databricks documents the export: Prometheus text, ``request_count_total``,
``request_4xx_count_total`` and ``request_5xx_count_total`` as gauges holding the counts of
the last complete period (one minute on Databricks: ``metrics_period`` here, so a test can
bake for seconds), each stamped with that period's end in milliseconds and labelled
``endpoint_name`` and ``served_entity_name``; ``cpu_usage_percentage`` and
``mem_usage_percentage`` beside them. An unknown endpoint is 404 RESOURCE_DOES_NOT_EXIST, a
name over 63 characters 400 INVALID_PARAMETER_VALUE.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from tests.support.databricks_endpoints import name_problem
from tests.support.databricks_rest import Answer, invalid, missing

COUNTS = ("request_count_total", "request_4xx_count_total", "request_5xx_count_total")
_HELP = {
    "request_count_total": "Number of requests during the last minute.",
    "request_4xx_count_total": "Number of 4xx errors during the last minute.",
    "request_5xx_count_total": "Number of 5xx errors during the last minute.",
}


class EndpointMetrics:
    """The metrics handler of :class:`tests.support.databricks.DatabricksStandIn` and the
    counts it exports."""

    endpoints: dict[str, dict[str, Any]]
    lock: threading.RLock
    metrics_period: float
    clock: Callable[[], float]
    # (endpoint, entity, period index) -> calls, 4xx answers, 5xx answers
    observed: dict[tuple[str, str, int], list[int]]

    def observe(self, endpoint: str, entity: str, status: int) -> None:
        """Count one call the stand-in routed to ``entity`` and the status it answered."""
        key = (endpoint, entity, self._period(self.clock()))
        with self.lock:
            counts = self.observed.setdefault(key, [0, 0, 0])
            counts[0] += 1
            counts[1] += 400 <= status < 500
            counts[2] += status >= 500

    def exported(self, endpoint: str) -> dict[str, tuple[int, int, int]]:
        """What the export answers now: per entity, the last complete period's calls, 4xx
        and 5xx answers."""
        last = self._period(self.clock()) - 1
        with self.lock:
            config = (self.endpoints.get(endpoint) or {}).get("config") or {}
            names = [e["name"] for e in config.get("served_entities", [])]
            found = {n: self.observed.get((endpoint, n, last), [0, 0, 0]) for n in names}
            return {n: (c[0], c[1], c[2]) for n, c in found.items()}

    def _get_metrics(self, data: Any, ep: str) -> Answer:
        problem = name_problem("endpoint", ep, 63)
        if problem is not None:
            return invalid(problem)
        if ep not in self.endpoints:
            return missing("Endpoint", ep)
        stamp = round(self._period(self.clock()) * self.metrics_period * 1000)
        text = _exposition(ep, self.exported(ep), stamp)
        return 200, {"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}, text.encode()

    def _period(self, now: float) -> int:
        return math.floor(now / self.metrics_period)


def _exposition(endpoint: str, counts: dict[str, tuple[int, int, int]], stamp: int) -> str:
    lines = []
    for index, metric in enumerate(COUNTS):
        lines += [f"# HELP {metric} {_HELP[metric]}", f"# TYPE {metric} gauge"]
        for entity, values in sorted(counts.items()):
            labels = f'endpoint_name="{endpoint}",served_entity_name="{entity}"'
            lines.append(f"{metric}{{{labels}}} {values[index]} {stamp}")
    for gauge, value in (("cpu_usage_percentage", 2.5), ("mem_usage_percentage", 6.8)):
        lines.append(f"# TYPE {gauge} gauge")
        for entity in sorted(counts):
            labels = f'endpoint_name="{endpoint}",served_entity_name="{entity}"'
            lines.append(f"{gauge}{{{labels}}} {value} {stamp}")
    return "\n".join(lines) + "\n"
