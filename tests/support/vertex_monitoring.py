"""Cloud Monitoring's ``MetricService.ListTimeSeries`` for the Vertex AI stand-in, answering
with what the dedicated endpoints really observed (:meth:`Observed.record`, called by
``tests/support/vertex_platform.py`` for every call a deployed model answered).

As Vertex AI writes them, every call counts in DELTA series of the deployed model's
endpoint (resource ``aiplatform.googleapis.com/Endpoint``: ``resource_container``,
``location``, ``endpoint_id``; metric label ``deployed_model_id``):
``prediction/online/prediction_count``, ``error_count`` (5xx answers), ``response_count``
(one series per ``response_code``) and ``prediction_latencies`` (``latency_type`` "total",
the time the call took through the endpoint, a DISTRIBUTION in ms with exponential buckets).
Each point holds one ``period`` of calls (Vertex: a minute) and is visible ``delay``
seconds after that period ends.

Requests are checked as Cloud Monitoring checks them (INVALID_ARGUMENT otherwise): ``name``
is ``projects/<project id or number>``; the filter is ``key = "value"`` terms joined by AND
naming ``metric.type`` (a metric the stand-in knows), ``resource.type`` and
``resource.labels.endpoint_id``; the interval has an ``end_time`` not before its
``start_time``. A point is answered when its end lies in (start_time, end_time]. Answers
come in one page; aggregation is not modelled (UNIMPLEMENTED).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from tests.support.vertex_grpc import Refusal

METRICS = "aiplatform.googleapis.com/prediction/online/"
RESOURCE = "aiplatform.googleapis.com/Endpoint"
# Exponential bucket options of the latency distributions: 1 ms, 1.4 ms, ... ~ 200 s.
GROWTH, SCALE, FINITE = 1.4, 1.0, 36
KNOWN = frozenset(
    METRICS + m
    for m in ("prediction_count", "error_count", "response_count", "prediction_latencies")
)
_TERM = re.compile(r'\s*([a-z_.]+)\s*=\s*"([^"]*)"\s*')
_DELTA, _INT64, _DISTRIBUTION = 2, 2, 5


@dataclass(frozen=True)
class Key:
    """One time series: metric type, endpoint and its metric labels."""

    metric: str
    endpoint: str
    labels: tuple[tuple[str, str], ...]


class Observed:
    """Calls the dedicated endpoints answered, as Cloud Monitoring's time series (module
    docstring)."""

    def __init__(
        self,
        project: str,
        location: str,
        numbers: tuple[str, ...],
        period: float = 60.0,
        delay: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.project, self.location, self.numbers = project, location, numbers
        self.period, self.delay, self.clock = period, delay, clock
        self.lock = threading.Lock()
        # series -> period index -> count, or bucket counts (a distribution)
        self.points: dict[Key, dict[int, list[int]]] = {}

    def record(self, endpoint: str, deployed_id: str, status: int, milliseconds: float) -> None:
        """One call ``deployed_id`` answered with ``status`` after ``milliseconds``."""
        index = math.floor(self.clock() / self.period)
        model = (("deployed_model_id", deployed_id),)
        counts = {
            Key(METRICS + "prediction_count", endpoint, model): 1,
            Key(METRICS + "error_count", endpoint, model): int(status >= 500),
            Key(METRICS + "response_count", endpoint, (*model, ("response_code", str(status)))): 1,
        }
        latency = Key(
            METRICS + "prediction_latencies", endpoint, (*model, ("latency_type", "total"))
        )
        with self.lock:
            for key, count in counts.items():
                self._add(key, index, 0, count, 1)
            self._add(latency, index, _bucket(milliseconds), 1, FINITE + 2)

    def list_time_series(self, request: Any) -> Any:
        """ListTimeSeries (module docstring). Raises Refusal (INVALID_ARGUMENT,
        UNIMPLEMENTED)."""
        from google.cloud import monitoring_v3

        self._check_name(request.name)
        wanted = _terms(request.filter)
        start, end = _interval(request)
        if request.aggregation.per_series_aligner or request.aggregation.cross_series_reducer:
            raise Refusal(grpc.StatusCode.UNIMPLEMENTED, "The stand-in does not aggregate.")
        headers_only = request.view == monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.HEADERS
        with self.lock:
            found = [
                self._series(key, points, start, end, headers_only)
                for key, points in self.points.items()
                if self._matches(key, wanted)
            ]
        return monitoring_v3.ListTimeSeriesResponse(time_series=[s for s in found if s.points])

    # ----- plumbing -----

    def _add(self, key: Key, index: int, slot: int, count: int, width: int) -> None:
        values = self.points.setdefault(key, {}).setdefault(index, [0] * width)
        values[slot] += count

    def _check_name(self, name: str) -> None:
        if name not in {f"projects/{p}" for p in (self.project, *self.numbers)}:
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Name must begin with 'projects/' and name this project: {name!r}",
            )

    def _matches(self, key: Key, wanted: dict[str, str]) -> bool:
        labels = {
            "metric.type": key.metric,
            "resource.type": RESOURCE,
            "resource.labels.resource_container": self.project,
            "resource.labels.location": self.location,
            "resource.labels.endpoint_id": key.endpoint,
            **{f"metric.labels.{k}": v for k, v in key.labels},
        }
        return all(labels.get(name) == value for name, value in wanted.items())

    def _series(
        self, key: Key, points: dict[int, list[int]], start: float, end: float, headers: bool
    ) -> Any:
        from google.cloud import monitoring_v3

        latency = key.metric.endswith("prediction_latencies")
        chosen = [
            _point(i * self.period, (i + 1) * self.period, values, latency)
            for i, values in sorted(points.items(), reverse=True)  # newest first
            if start < (i + 1) * self.period <= end
            and (i + 1) * self.period + self.delay <= self.clock()
        ]
        return monitoring_v3.TimeSeries(
            metric={"type": key.metric, "labels": dict(key.labels)},
            resource={
                "type": RESOURCE,
                "labels": {
                    "resource_container": self.project,
                    "location": self.location,
                    "endpoint_id": key.endpoint,
                },
            },
            metric_kind=_DELTA,
            value_type=_DISTRIBUTION if latency else _INT64,
            unit="ms" if latency else "1",
            points=[] if headers else chosen,
        )


def _bucket(milliseconds: float) -> int:
    """The exponential bucket of a latency: 0 below SCALE, FINITE + 1 at the top."""
    if milliseconds < SCALE:
        return 0
    return min(FINITE + 1, 1 + math.floor(math.log(milliseconds / SCALE, GROWTH)))


def _point(start: float, end: float, values: list[int], latency: bool) -> Any:
    from google.api import distribution_pb2
    from google.cloud import monitoring_v3

    interval = monitoring_v3.TimeInterval(start_time=_time(start), end_time=_time(end))
    if not latency:
        return monitoring_v3.Point(
            interval=interval, value=monitoring_v3.TypedValue(int64_value=values[0])
        )
    options = distribution_pb2.Distribution.BucketOptions(
        exponential_buckets={"num_finite_buckets": FINITE, "growth_factor": GROWTH, "scale": SCALE}
    )
    found = distribution_pb2.Distribution(
        count=sum(values), bucket_counts=values, bucket_options=options
    )
    return monitoring_v3.Point(
        interval=interval, value=monitoring_v3.TypedValue(distribution_value=found)
    )


def _time(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _terms(text: str) -> dict[str, str]:
    """The filter's terms, ``label.`` spelt ``labels.``; INVALID_ARGUMENT when it is not
    ``key = "value"`` terms joined by AND or misses one Vertex's series need."""
    terms: dict[str, str] = {}
    for term in text.split(" AND "):
        match = _TERM.fullmatch(term)
        if match is None:
            raise Refusal(
                grpc.StatusCode.INVALID_ARGUMENT, f"The filter cannot be parsed at {term!r}."
            )
        name = re.sub(r"\.label\.", ".labels.", match[1])
        terms[name] = match[2]
    missing = [
        k for k in ("metric.type", "resource.type", "resource.labels.endpoint_id") if k not in terms
    ]
    if missing:
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"The filter {text!r} must name {', '.join(missing)}.",
        )
    if terms["metric.type"] not in KNOWN:
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            f'Cannot find metric(s) that match type = "{terms["metric.type"]}".',
        )
    return terms


def _interval(request: Any) -> tuple[float, float]:
    """The interval's (start, end) in epoch seconds; INVALID_ARGUMENT without an end or
    with an end before the start."""
    from google.cloud import monitoring_v3

    interval = monitoring_v3.TimeInterval.pb(request.interval)
    if not interval.HasField("end_time"):
        raise Refusal(grpc.StatusCode.INVALID_ARGUMENT, "Field interval.end_time is required.")
    end = interval.end_time.ToDatetime(dt.UTC).timestamp()
    start = (
        interval.start_time.ToDatetime(dt.UTC).timestamp()
        if interval.HasField("start_time")
        else end
    )
    if start > end:
        raise Refusal(
            grpc.StatusCode.INVALID_ARGUMENT,
            "Field interval.start_time must not be later than interval.end_time.",
        )
    return start, end
