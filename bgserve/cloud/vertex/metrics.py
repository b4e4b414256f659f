"""Live traffic per release read from Cloud Monitoring: the Vertex AI backend's traffic source.

Vertex AI writes every online prediction of a deployed model to Cloud Monitoring (resource
``aiplatform.googleapis.com/Endpoint``, labels ``endpoint_id`` and ``location``; metric
label ``deployed_model_id``, which bgserve sets to the release id).
:class:`MonitoringTraffic` reads two metrics with ``MetricService.ListTimeSeries``:

- ``prediction/online/response_count``, one series per ``response_code``: every answer is a
  request, a 5xx answer an error (a client's 4xx is not held against the release, as on
  SageMaker). ``prediction_count`` is not read: it counts predictions, which may be
  several per request;
- ``prediction/online/prediction_latencies`` with ``latency_type = "total"`` (what a client
  waited, as bgserve's own data plane measures), a DISTRIBUTION in milliseconds.

Both are DELTA metrics sampled once a minute: each point holds the calls of its minute.
The points are read raw (no aggregation: an aligner would prorate points that straddle an
alignment period, making counts fractional and able to shrink) and summed from the minute
this source was made; a point counts once its end lies after that. CUMULATIVE series are
read as Cloud Monitoring defines them (each point is the total since its start time): per
start time, the latest point minus the first one read, or minus nothing when that start
time came after this source's origin (a reset).

The latency histogram is re-bucketed *conservatively*: each of Cloud Monitoring's buckets
(bounds from its BucketOptions: linear, exponential or explicit) goes whole into bgserve's
bucket that holds its upper bound, the overflow bucket into +Inf. A latency is never placed
below where it was, so a quantile read from the histogram is never under the true one; it
may be over by one Cloud Monitoring bucket width. Blue and green are rounded alike, so the
latency checks compare them on equal terms.

What this gives the analysis, and what it does not:

- the ``error_rate`` check on Vertex AI's own count of each deployed model's 5xx answers,
  and the latency checks on its latency distribution, rounded up as said;
- minutes, not seconds: points cover a minute and appear a minute or more after it ends,
  so a step must bake for minutes for its window to hold traffic, and a window holds calls
  from a minute or so before it;
- calls that name a deployed model (the golden comparison, the warm-up) are counted too;
  they come before a plan's first step, so no step's window holds them;
- no streaming histograms (time to first token, per output token).

The rollout engine asks four times a second; the counts change once a minute and each
reading is a GetEndpoint and two ListTimeSeries calls (quota: 6000 a minute per project).
So the composition root reads it through :class:`~bgserve.app.traffic_reuse.ReadEvery`
(``BGSERVE_VERTEX_METRICS_READ_SECONDS``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

from bgserve.cloud.vertex.google import call
from bgserve.cloud.vertex.names import release_of
from bgserve.domain.latency import BUCKETS, bucket_of
from bgserve.domain.window import SideWindow
from bgserve.errors import BackendError

METRICS = "aiplatform.googleapis.com/prediction/online/"
RESPONSES = METRICS + "response_count"
LATENCIES = METRICS + "prediction_latencies"
RESOURCE = "aiplatform.googleapis.com/Endpoint"
ROLE = "the Monitoring Viewer role (monitoring.timeSeries.list)"
# google.api.MetricDescriptor's MetricKind values (as the time series carry them).
_GAUGE, _DELTA, _CUMULATIVE = 1, 2, 3
# Distribution units Cloud Monitoring may report, in milliseconds; Vertex reports "ms".
_MS_PER_UNIT = {"ms": 1.0, "": 1.0, "s": 1000.0, "us": 0.001}

Vector = tuple[int, ...]
Deployed = Callable[[str], "tuple[str, frozenset[int]] | None"]


class MonitoringTraffic:
    """:class:`~bgserve.app.ports.TrafficSource` of the Vertex AI backend (module
    docstring): ``deployed(deployment)`` names the deployment's endpoint id and the release
    ids deployed on it (None without an endpoint)."""

    def __init__(
        self,
        client: Any,
        project: str,
        location: str,
        deployed: Deployed,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        timeout: float = 30.0,
    ) -> None:
        """``client`` is a ``monitoring_v3.MetricServiceClient``."""
        self.client = client
        self.project, self.location = project, location
        self.deployed = deployed
        self.clock = clock
        self.timeout = timeout
        # Counts start at the minute this source was made: an arbitrary origin, as the
        # protocol allows (the engine only ever subtracts two readings).
        self.origin = clock().replace(second=0, microsecond=0)

    def windows(self, deployment: str) -> dict[int, SideWindow]:
        """Requests, 5xx errors and the latency histogram per release id deployed on
        ``deployment``'s endpoint since this source started; {} without an endpoint. Each
        call is a GetEndpoint and two ListTimeSeries (all their pages).

        Raises:
            BackendError (an Unavailable): Vertex AI or Cloud Monitoring cannot be reached
            or refuses the query, or Cloud Monitoring answers series this source cannot
            read (no deployed model label, a gauge, bucket counts that do not add up).
        """
        found = self.deployed(deployment)
        if found is None or not found[1]:
            return {}
        endpoint_id, releases = found
        counts = responses(self._series(RESPONSES, endpoint_id), self.origin, releases)
        latency = self._series(LATENCIES, endpoint_id, latency_type="total")
        buckets = latencies(latency, self.origin, releases)
        return {
            release: SideWindow(
                requests=counts.get(release, (0, 0))[0],
                errors=counts.get(release, (0, 0))[1],
                buckets=buckets.get(release, (0,) * BUCKETS),
            )
            for release in sorted(releases)
        }

    def _series(self, metric: str, endpoint_id: str, **labels: str) -> list[Any]:
        from google.cloud import monitoring_v3

        request = monitoring_v3.ListTimeSeriesRequest(
            name=f"projects/{self.project}",
            filter=series_filter(metric, endpoint_id, self.location, labels),
            interval=monitoring_v3.TimeInterval(start_time=self.origin, end_time=self.clock()),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
        )
        pages = self.client.list_time_series
        # The pager fetches further pages while iterated: inside the call, so their errors
        # are translated too.
        found: list[Any] = call(
            "list time series",
            lambda: list(pages(request=request, timeout=self.timeout)),
            needs=ROLE,
        )
        return found


def series_filter(
    metric: str, endpoint_id: str, location: str, labels: Mapping[str, str] | None = None
) -> str:
    """The ListTimeSeries filter of ``metric`` on one endpoint, with metric ``labels``."""
    terms = [
        f'metric.type = "{metric}"',
        f'resource.type = "{RESOURCE}"',
        f'resource.labels.endpoint_id = "{endpoint_id}"',
        f'resource.labels.location = "{location}"',
    ]
    terms += [f'metric.labels.{k} = "{v}"' for k, v in sorted((labels or {}).items())]
    return " AND ".join(terms)


def responses(
    series: Iterable[Any], origin: dt.datetime, releases: frozenset[int]
) -> dict[int, tuple[int, int]]:
    """Requests and 5xx errors per release id from ``response_count`` series, counted
    after ``origin``; deployed models outside ``releases`` are ignored. Raises
    BackendError for a series without a deployed model or response code label, or one
    that is not a DELTA or CUMULATIVE count."""
    found: dict[int, tuple[int, int]] = {}
    for one in series:
        release = _release(one, releases)
        if release is None:
            continue
        code = one.metric.labels.get("response_code", "")
        if not code:
            raise BackendError(f"Cloud Monitoring answered a {RESPONSES} series without a code")
        (calls,) = series_total(one, origin, _count, (0,))
        requests, errors = found.get(release, (0, 0))
        found[release] = (requests + calls, errors + (calls if code.startswith("5") else 0))
    return found


def latencies(
    series: Iterable[Any], origin: dt.datetime, releases: frozenset[int]
) -> dict[int, Vector]:
    """The latency histogram per release id (bgserve's buckets) from
    ``prediction_latencies`` series, counted after ``origin``; deployed models outside
    ``releases`` are ignored. Raises BackendError for series this cannot read (see
    :func:`rebucket`)."""
    found: dict[int, Vector] = {}
    for one in series:
        release = _release(one, releases)
        if release is None:
            continue
        scale = _MS_PER_UNIT.get(one.unit)
        if scale is None:
            raise BackendError(f"Cloud Monitoring answered {LATENCIES} in unit {one.unit!r}")
        total = series_total(one, origin, _histogram(scale), (0,) * BUCKETS)
        found[release] = _add(found.get(release, (0,) * BUCKETS), total, 1)
    return found


def series_total(
    one: Any, origin: dt.datetime, value: Callable[[Any], Vector], zero: Vector
) -> Vector:
    """What a series counted after ``origin``, each point's TypedValue read by ``value``
    (``zero`` without points): the sum of a DELTA series' points, the growth of a CUMULATIVE
    one (module docstring). Raises BackendError for any other kind."""
    points = sorted(
        (p for p in one.points if p.interval.end_time > origin), key=lambda p: p.interval.end_time
    )
    if one.metric_kind == _DELTA:
        return _sum((value(p.value) for p in points), zero)
    if one.metric_kind == _CUMULATIVE:
        return _growth(points, origin, value, zero)
    kind = "GAUGE" if one.metric_kind == _GAUGE else f"kind {one.metric_kind}"
    raise BackendError(
        f"Cloud Monitoring answered a {kind} series of {one.metric.type}: live analysis "
        "reads DELTA or CUMULATIVE ones"
    )


def _growth(
    points: Sequence[Any], origin: dt.datetime, value: Callable[[Any], Vector], zero: Vector
) -> Vector:
    runs: dict[dt.datetime, list[Any]] = {}
    for point in points:
        runs.setdefault(point.interval.start_time, []).append(point)
    total = zero
    for start, run in runs.items():
        grown = value(run[-1].value)
        if start < origin:
            grown = _add(grown, value(run[0].value), -1)
        total = _add(total, grown, 1)
    return total


def rebucket(distribution: Any, ms_per_unit: float = 1.0) -> Vector:
    """A Distribution's bucket counts on bgserve's latency buckets, each of its buckets in
    the one holding its upper bound (module docstring). Raises BackendError for bucket
    counts that do not match its count or its BucketOptions."""
    counts = list(distribution.bucket_counts)
    if distribution.count == 0:
        return (0,) * BUCKETS
    bounds = bucket_bounds(distribution.bucket_options)
    if len(counts) > len(bounds) + 1 or sum(counts) != distribution.count:
        raise BackendError(
            f"Cloud Monitoring answered a latency distribution of {distribution.count} calls "
            f"with bucket counts {counts[:8]} for {len(bounds) + 1} buckets"
        )
    found = [0] * BUCKETS
    for index, count in enumerate(counts):
        upper = bucket_of(bounds[index] * ms_per_unit) if index < len(bounds) else BUCKETS - 1
        found[upper] += count
    return tuple(found)


def bucket_bounds(options: Any) -> list[float]:
    """The finite bucket bounds of a Distribution's BucketOptions (its bucket i holds
    values below bound i, the last one those at or above the last bound). Raises
    BackendError when none are set or they do not grow."""
    kind = options.WhichOneof("options")
    if kind == "linear_buckets":
        linear = options.linear_buckets
        bounds = [linear.offset + linear.width * i for i in range(linear.num_finite_buckets + 1)]
    elif kind == "exponential_buckets":
        exp = options.exponential_buckets
        bounds = [exp.scale * exp.growth_factor**i for i in range(exp.num_finite_buckets + 1)]
    elif kind == "explicit_buckets":
        bounds = list(options.explicit_buckets.bounds)
    else:
        raise BackendError("Cloud Monitoring answered a latency distribution without buckets")
    if not bounds or any(high <= low for low, high in pairwise(bounds)):
        raise BackendError(f"Cloud Monitoring answered latency buckets that do not grow: {kind}")
    return bounds


def _release(one: Any, releases: frozenset[int]) -> int | None:
    deployed_id = one.metric.labels.get("deployed_model_id")
    if deployed_id is None:
        raise BackendError(
            f"Cloud Monitoring answered a {one.metric.type} series without deployed_model_id"
        )
    release = release_of(deployed_id)
    return release if release in releases else None


def _histogram(ms_per_unit: float) -> Callable[[Any], Vector]:
    return lambda value: rebucket(value.distribution_value, ms_per_unit)


def _count(value: Any) -> Vector:
    return (int(value.int64_value),)


def _sum(values: Iterable[Vector], zero: Vector) -> Vector:
    total = zero
    for one in values:
        total = _add(total, one, 1)
    return total


def _add(mine: Vector, theirs: Vector, sign: int) -> Vector:
    width = max(len(mine), len(theirs))
    mine = mine + (0,) * (width - len(mine))
    theirs = theirs + (0,) * (width - len(theirs))
    return tuple(a + sign * b for a, b in zip(mine, theirs, strict=True))
