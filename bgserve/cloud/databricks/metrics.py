"""Live traffic per release read from the serving endpoint's metrics export: the Databricks
backend's traffic source.

``GET /api/2.0/serving-endpoints/<name>/metrics`` (the SDK's
``serving_endpoints.export_metrics``) answers Prometheus/OpenMetrics text with, per served
entity (label ``served_entity_name``, or ``served_model_name``), ``request_count_total``,
``request_4xx_count_total`` and ``request_5xx_count_total``: the counts of the **last
minute**, exported as gauges stamped with that minute (despite the ``_total``), beside CPU,
memory and concurrency gauges and ``request_latency_ms``. :class:`MetricsExportTraffic`
adds each minute once, keyed by its timestamp, into running totals per release; a family
typed ``counter`` is read as a cumulative count instead (its drops are resets). The rollout
engine subtracts two readings into a step's window.

What this gives the analysis, and what it does not:

- the ``error_rate`` check on Databricks' own counts. An error is a 4xx *or* a 5xx answer:
  MLflow's scoring server, which serves the entity, answers a model that raises with 400
  BAD_REQUEST, so counting 5xx alone would miss a crashing green; a client's bad request
  lands on blue and green alike, in proportion to their traffic;
- **no latency histogram**: ``request_latency_ms`` is in Databricks' own buckets over one
  minute, not the per-request buckets the latency checks test, so those checks are
  *skipped* (and say so);
- the counts come one minute at a time: a step must bake for minutes, and the export must
  be read more often than once a minute or minutes are missed;
- calls of one entity on its own route (the golden comparison, the warm-up) are counted
  too; they come before a plan's first step, so no step's window holds them.

The engine asks for counts four times a second; the composition root reads the export
through :class:`~bgserve.app.traffic_reuse.ReadEvery`
(``BGSERVE_DATABRICKS_METRICS_READ_SECONDS``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bgserve.cloud.databricks.names import release_of_entity
from bgserve.cloud.databricks.workspace import call
from bgserve.domain.window import SideWindow
from bgserve.errors import BackendError

REQUESTS = "request_count_total"
ERRORS = ("request_4xx_count_total", "request_5xx_count_total")
ENTITY_LABELS = ("served_entity_name", "served_model_name")


@dataclass(frozen=True)
class Count:
    """One release's value of one metric in one export: ``stamp`` (seconds) is the minute it
    counts, None without a timestamp; ``cumulative`` when the family is a counter."""

    value: float
    stamp: float | None
    cumulative: bool


def parse_export(text: str) -> dict[tuple[int, str], Count]:
    """The request and error counts of ``text`` per (release id, metric name), summed over
    the samples of one entity (entities bgserve did not name are left out).

    Raises:
        BackendError: ``text`` is not Prometheus/OpenMetrics text, or a per-minute count
        (a gauge) carries no timestamp to tell one minute from the next.
    """
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[tuple[int, str], Count] = {}
    try:
        for family in text_string_to_metric_families(text):
            _add_family(counts, family.type == "counter", family.samples)
    except ValueError as exc:
        raise BackendError(f"Databricks' metrics export is not Prometheus text: {exc}") from exc
    return counts


def _add_family(
    counts: dict[tuple[int, str], Count], cumulative: bool, samples: Iterable[Any]
) -> None:
    for sample in samples:
        if sample.name != REQUESTS and sample.name not in ERRORS:
            continue
        release = _release_of(sample.labels)
        if release is None:
            continue
        if not cumulative and sample.timestamp is None:
            raise BackendError(
                f"Databricks' metrics export has {sample.name} of "
                f"{sample.labels} without a timestamp: its per-minute counts cannot be told "
                "apart"
            )
        stamp = None if sample.timestamp is None else float(sample.timestamp)
        key = (release, sample.name)
        earlier = counts.get(key)
        value = float(sample.value) + (earlier.value if earlier is not None else 0.0)
        counts[key] = Count(value, stamp, cumulative)


def _release_of(labels: Mapping[str, str]) -> int | None:
    for label in ENTITY_LABELS:
        if label in labels:
            return release_of_entity(labels[label])
    return None


@dataclass
class _Totals:
    """Running totals of one deployment since its first reading."""

    sums: dict[tuple[int, str], float] = field(default_factory=dict)
    last: dict[tuple[int, str], Count] = field(default_factory=dict)

    def add(self, counts: Mapping[tuple[int, str], Count]) -> None:
        for key, count in counts.items():
            self.sums[key] = self.sums.get(key, 0.0) + self._new(self.last.get(key), count)
            self.last[key] = count

    @staticmethod
    def _new(earlier: Count | None, count: Count) -> float:
        """What ``count`` adds to the total since ``earlier``."""
        if count.cumulative:
            seen = earlier.value if earlier is not None and earlier.cumulative else 0.0
            return count.value - seen if count.value >= seen else count.value
        if earlier is not None and earlier.stamp is not None and count.stamp is not None:
            return count.value if count.stamp > earlier.stamp else 0.0
        return count.value

    def windows(self) -> dict[int, SideWindow]:
        releases = sorted({release for release, _ in self.sums})
        return {
            release: SideWindow(
                requests=round(self.sums.get((release, REQUESTS), 0.0)),
                errors=round(sum(self.sums.get((release, name), 0.0) for name in ERRORS)),
            )
            for release in releases
        }


class MetricsExportTraffic:
    """:class:`~bgserve.app.ports.TrafficSource` of the Databricks backend (module
    docstring): ``endpoint_of(deployment)`` names the deployment's serving endpoint."""

    def __init__(self, client: Any, endpoint_of: Callable[[str], str]) -> None:
        self.client = client
        self.endpoint_of = endpoint_of
        self._totals: dict[str, _Totals] = {}
        self._lock = threading.Lock()

    def windows(self, deployment: str) -> dict[int, SideWindow]:
        """Requests and errors (4xx and 5xx) per release id of ``deployment`` since its
        first reading (no latency histogram); {} when the deployment has no endpoint. Each
        call is one export of the endpoint's metrics.

        Raises:
            BackendError (an Unavailable): Databricks refuses the export, or answers text
            that is not Prometheus text.
        """
        endpoint = self.endpoint_of(deployment)
        answer = call(
            "export metrics", self.client.serving_endpoints.export_metrics, endpoint,
            missing_ok=True,
        )  # fmt: skip
        if answer is None:
            return {}
        counts = parse_export(_text_of(answer, endpoint))
        with self._lock:
            totals = self._totals.setdefault(deployment, _Totals())
            totals.add(counts)
            return totals.windows()


def _text_of(answer: Any, endpoint: str) -> str:
    """The body of an ExportMetricsResponse (the SDK hands it over as a stream)."""
    contents = getattr(answer, "contents", None)
    if contents is None:
        raise BackendError(f"Databricks' metrics export of {endpoint} answered no body")
    raw = contents.read() if hasattr(contents, "read") else contents
    try:
        return raw.decode() if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError as exc:
        raise BackendError(f"Databricks' metrics export of {endpoint} is not text: {exc}") from exc
