"""Live traffic per release read from Azure Monitor: the Azure ML backend's traffic source.

Azure Monitor keeps platform metrics of every managed online endpoint (resource
``Microsoft.MachineLearningServices/workspaces/onlineEndpoints``). :class:`MonitorTraffic`
reads one of them with azure-monitor-query's ``MetricsQueryClient.query_resource`` (the
REST ``GET {endpoint id}/providers/Microsoft.Insights/metrics``):

- ``RequestsPerMinute``, aggregation ``Total``, one-minute grain, split by the dimensions
  ``deployment`` (bgserve names deployments ``release-<id>``) and ``statusCodeClass``
  (``2xx``, ``4xx``, ``5xx``): every call is a request, a ``4xx`` or ``5xx`` one an error.
  A model that raises is a 4xx on Azure ML: the scoring endpoint answers a container's
  non-200 answer with 424, so counting 5xx alone would miss a crashing green; a client's
  bad request lands on blue and green alike, in proportion to their traffic.

Each answer holds the last :data:`LOOKBACK` minutes, one value per minute and series. A
minute's count may still grow after it is first read (Azure ingests a minute's calls late),
so the latest value of each (release, minute) stands and each minute is counted once in
the running totals; minutes that have left the lookback are settled into them. Deployments
bgserve did not name are left out. The rollout engine subtracts two readings into a step's
window.

What this gives the analysis, and what it does not:

- the ``error_rate`` check on Azure Monitor's own counts;
- **no latency histogram**: Azure keeps ``RequestLatency`` as an average and the
  percentiles ``RequestLatency_P50``..``_P99`` per minute, not the per-request distribution
  the latency checks test (percentiles of minutes cannot be merged into a window's), so
  those checks are *skipped* (and say so);
- minutes, not seconds: a step must bake for minutes for its window to hold traffic;
- calls of one deployment by name (the golden comparison, the warm-up) are counted too;
  they come before a plan's first step, so no step's window holds them.

The engine asks for counts four times a second; the composition root reads Azure Monitor
through :class:`~bgserve.app.traffic_reuse.ReadEvery`
(``BGSERVE_AZUREML_METRICS_READ_SECONDS``). Reading needs the Monitoring Reader role (or
``Microsoft.Insights/metrics/read``) on the endpoint.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bgserve.cloud.azureml.azure import error_reason, one_line
from bgserve.cloud.azureml.names import release_of_deployment
from bgserve.domain.window import SideWindow
from bgserve.errors import BackendError

METRIC = "RequestsPerMinute"
AGGREGATION = "Total"
DEPLOYMENT = "deployment"
STATUS_CLASS = "statusCodeClass"
SPLIT = f"{DEPLOYMENT} eq '*' and {STATUS_CLASS} eq '*'"
ERROR_CLASSES = frozenset({"4xx", "5xx"})
GRAIN = dt.timedelta(minutes=1)
LOOKBACK = dt.timedelta(minutes=5)
ROLE = "the Monitoring Reader role (Microsoft.Insights/metrics/read) on the endpoint"
_EXTRA = 'pip install "bgserve[azureml]"'

Counts = dict[tuple[int, dt.datetime], tuple[float, float]]
"""Requests and errors per (release id, minute)."""


def minute_counts(result: Any) -> Counts:
    """The requests and errors of each release and minute in a ``MetricsQueryResult`` of
    :data:`METRIC` split by deployment and status code class (the classes summed).

    Raises:
        BackendError: the answer has no :data:`METRIC`, or a series lacks the deployment or
        status code class dimension (the query was not split as asked), or a value has no
        timestamp.
    """
    metrics = [m for m in (getattr(result, "metrics", None) or []) if m.name == METRIC]
    if not metrics:
        raise BackendError(f"Azure Monitor answered no {METRIC} for the endpoint")
    counts: Counts = {}
    for series in metrics[0].timeseries or []:
        _add_series(counts, series)
    return counts


def _add_series(counts: Counts, series: Any) -> None:
    dimensions = {k.lower(): v for k, v in (series.metadata_values or {}).items()}
    if DEPLOYMENT not in dimensions or STATUS_CLASS.lower() not in dimensions:
        raise BackendError(
            f"Azure Monitor answered {METRIC} not split by {DEPLOYMENT} and {STATUS_CLASS} "
            f"(dimensions {sorted(dimensions)})"
        )
    release = release_of_deployment(str(dimensions[DEPLOYMENT]))
    if release is None:
        return
    error = str(dimensions[STATUS_CLASS.lower()]).lower() in ERROR_CLASSES
    for value in series.data or []:
        if value.timestamp is None:
            raise BackendError(f"Azure Monitor answered a {METRIC} value without a timestamp")
        calls = float(value.total or 0.0)
        key = (release, value.timestamp)
        requests, errors = counts.get(key, (0.0, 0.0))
        counts[key] = (requests + calls, errors + (calls if error else 0.0))


@dataclass
class _Totals:
    """Running totals of one deployment: settled minutes summed, recent ones by minute."""

    settled: dict[int, tuple[float, float]] = field(default_factory=dict)
    recent: Counts = field(default_factory=dict)

    def add(self, counts: Counts) -> None:
        """Take the latest value of each minute; settle the minutes before the lookback of
        the newest one (Azure answers them no more)."""
        self.recent.update(counts)
        if not self.recent:
            return
        oldest = max(minute for _, minute in self.recent) - LOOKBACK
        for key in [k for k in self.recent if k[1] < oldest]:
            requests, errors = self.recent.pop(key)
            before = self.settled.get(key[0], (0.0, 0.0))
            self.settled[key[0]] = (before[0] + requests, before[1] + errors)

    def windows(self) -> dict[int, SideWindow]:
        sums = dict(self.settled)
        for (release, _), (requests, errors) in self.recent.items():
            before = sums.get(release, (0.0, 0.0))
            sums[release] = (before[0] + requests, before[1] + errors)
        return {
            release: SideWindow(requests=round(requests), errors=round(errors))
            for release, (requests, errors) in sorted(sums.items())
        }


class MonitorTraffic:
    """:class:`~bgserve.app.ports.TrafficSource` of the Azure ML backend (module docstring):
    ``client`` is a ``MetricsQueryClient``, ``endpoint_of(deployment)`` the ARM id of the
    deployment's online endpoint."""

    def __init__(self, client: Any, endpoint_of: Callable[[str], str]) -> None:
        self.client = client
        self.endpoint_of = endpoint_of
        self._totals: dict[str, _Totals] = {}
        self._lock = threading.Lock()

    def windows(self, deployment: str) -> dict[int, SideWindow]:
        """Requests and errors (4xx and 5xx) per release id of ``deployment`` since its
        first reading (no latency histogram); {} when the endpoint does not exist. Each call
        is one metrics query of the endpoint.

        Raises:
            BackendError (an Unavailable): Azure Monitor refuses the query (403 names the
            role it needs), cannot be reached, or answers counts not split by deployment.
        """
        result = query(self.client, self.endpoint_of(deployment))
        if result is None:
            return {}
        counts = minute_counts(result)
        with self._lock:
            totals = self._totals.setdefault(deployment, _Totals())
            totals.add(counts)
            return totals.windows()


def query(client: Any, resource: str) -> Any:
    """The last :data:`LOOKBACK` of :data:`METRIC` of ``resource`` split by deployment and
    status code class; None when the resource does not exist.

    Raises:
        BackendError: Azure Monitor refuses the query or cannot be reached (errors of
        azure-core translated, naming :data:`ROLE` on 403).
    """
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
    )

    try:
        return client.query_resource(
            resource,
            metric_names=[METRIC],
            timespan=LOOKBACK,
            granularity=GRAIN,
            aggregations=[AGGREGATION],
            filter=SPLIT,
        )
    except ResourceNotFoundError:
        return None
    except ClientAuthenticationError as exc:
        if exc.status_code == 403:
            raise BackendError(_forbidden(exc)) from exc
        raise BackendError(
            f"Azure Monitor metrics query: no usable Azure credential ({one_line(exc)})"
        ) from exc
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise BackendError(_forbidden(exc)) from exc
        raise BackendError(f"Azure Monitor metrics query refused: {error_reason(exc)}") from exc
    except AzureError as exc:
        raise BackendError(f"Azure Monitor metrics query failed: {one_line(exc)}") from exc


def metrics_client(credential: Any, **client_kwargs: Any) -> Any:
    """A ``MetricsQueryClient`` of ``credential``; ``client_kwargs`` go down to its azure-core
    pipeline (a ``transport``). Raises BackendError without azure-monitor-query."""
    try:
        from azure.monitor.query import MetricsQueryClient
    except ImportError as exc:
        raise BackendError(
            f"live analysis on Azure ML needs azure-monitor-query: {_EXTRA}"
        ) from exc
    return MetricsQueryClient(credential, **client_kwargs)


def _forbidden(exc: Any) -> str:
    return f"Azure Monitor metrics query refused (403): it needs {ROLE}: {error_reason(exc)}"
