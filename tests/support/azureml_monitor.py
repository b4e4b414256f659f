"""Azure Monitor's metrics of the Azure ML stand-in's endpoints: ``GET {endpoint id}/providers/
Microsoft.Insights/metrics`` answering, per minute, the calls its scoring endpoints routed.

As Azure Monitor's metrics REST API answers (the shape azure-monitor-query deserializes):
``{"cost", "timespan": "start/end", "interval", "namespace", "resourceregion", "value":
[{"id", "type", "name": {"value", "localizedValue"}, "unit", "timeseries": [{"metadatavalues":
[{"name": {...}, "value"}], "data": [{"timeStamp", "total"}]}], "errorCode"}]}``, one series
per value of the dimensions the ``$filter`` splits by (``dim eq '*'``), restricted by the
ones it fixes (``dim eq 'v'``), the others summed.

Recorded for each routed call: its ``deployment``, the ``statusCode`` Azure answers (424 for
a container's non-2xx answer, as Azure ML documents), its ``statusCodeClass`` and the
container's ``modelStatusCode``. A minute lasts ``minute_seconds`` (a test can make it
short): minute ``n`` of the stand-in is stamped ``BASE + n minutes``; a timespan given as a
duration ends at the stand-in's now.

The query is validated as Azure does, 400 ``BadRequest`` with Azure Monitor's error shape
(``{"code", "message"}``) otherwise: known metric names of the endpoint, a timespan, an
``interval`` from Azure's set, known aggregations and dimensions. 404 for an endpoint that
does not exist.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import isodate

from tests.support.azureml_rest import Answer, missing

NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
METRICS = {
    "RequestsPerMinute": ("Count", ("deployment", "statusCode", "statusCodeClass",
                                    "modelStatusCode")),
    "RequestLatency": ("Milliseconds", ("deployment",)),
    "RequestLatency_P50": ("Milliseconds", ("deployment",)),
    "RequestLatency_P90": ("Milliseconds", ("deployment",)),
    "RequestLatency_P95": ("Milliseconds", ("deployment",)),
    "RequestLatency_P99": ("Milliseconds", ("deployment",)),
    "ConnectionsActive": ("Count", ()),
    "NewConnectionsPerSecond": ("CountPerSecond", ()),
    "NetworkBytes": ("BytesPerSecond", ()),
}  # fmt: skip
INTERVALS = {"PT1M", "PT5M", "PT15M", "PT30M", "PT1H", "PT6H", "PT12H", "P1D"}
AGGREGATIONS = {"average", "count", "minimum", "maximum", "total"}
BASE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_CLAUSE = re.compile(r"\s*(\w+)\s+eq\s+'([^']*)'\s*")

Dims = tuple[tuple[str, str], ...]


def monitor_error(message: str, status: int = 400, code: str = "BadRequest") -> Answer:
    """Azure Monitor's error answer: ``{"code", "message"}``."""
    return status, {}, {"code": code, "message": message}


class MonitorMetrics:
    """The metrics API of the stand-in's endpoints and the calls it counted (module
    docstring)."""

    def __init__(
        self,
        endpoints: Mapping[str, Any],
        region: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints, self.region, self.clock = endpoints, region, clock
        self.minute_seconds = 60.0
        self.started = clock()
        self.lock = threading.Lock()
        # (endpoint, minute index, dimensions) -> calls
        self.observed: Counter[tuple[str, int, Dims]] = Counter()
        self.queries: list[dict[str, str]] = []

    def minute(self) -> int:
        """The stand-in's current minute index."""
        return int((self.clock() - self.started) // self.minute_seconds)

    def observe(self, endpoint: str, deployment: str, model_status: int) -> None:
        """Count one call routed to ``deployment`` whose container answered
        ``model_status``."""
        status = model_status if 200 <= model_status < 300 else 424
        dims = (
            ("deployment", deployment),
            ("statusCode", str(status)),
            ("statusCodeClass", f"{status // 100}xx"),
            ("modelStatusCode", str(model_status)),
        )
        with self.lock:
            self.observed[(endpoint, self.minute(), dims)] += 1

    def answer(self, endpoint: str, resource: str, query: str) -> Answer:
        """One metrics query of ``endpoint`` (``resource`` is its id)."""
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        self.queries.append(params)
        if endpoint not in self.endpoints:
            return missing("online endpoint", endpoint)
        problem = _problem(params)
        if problem is not None:
            return monitor_error(problem)
        names = params["metricnames"].split(",")
        filters = _filter(params.get("$filter", ""))
        if isinstance(filters, str):
            return monitor_error(filters)
        for name in names:
            unknown = set(filters) - set(METRICS[name][1])
            if unknown:
                return monitor_error(f"Metric {name} has no dimension {sorted(unknown)[0]}.")
        first, last, grain = self._span(params)
        series = [self._metric(resource, endpoint, n, filters, first, last, grain) for n in names]
        span = f"{_iso(first)}/{_iso(_stamp(last + grain))}"
        body = {
            "cost": 0,
            "timespan": span,
            "interval": params["interval"],
            "namespace": NAMESPACE,
            "resourceregion": self.region,
            "value": series,
        }
        return 200, {}, body

    def _span(self, params: Mapping[str, str]) -> tuple[dt.datetime, int, int]:
        """The first minute's time, the last minute index and the grain in minutes."""
        grain = int(isodate.parse_duration(params["interval"]).total_seconds() // 60)
        now = self.minute()
        minutes = int(isodate.parse_duration(params["timespan"]).total_seconds() // 60)
        first = now - minutes + 1
        first -= first % grain
        return _stamp(first), now, grain

    def _metric(
        self,
        resource: str,
        endpoint: str,
        name: str,
        filters: Mapping[str, str],
        first: dt.datetime,
        last: int,
        grain: int,
    ) -> dict[str, Any]:
        unit, _ = METRICS[name]
        start = int((first - BASE).total_seconds() // 60)
        timeseries = []
        if name == "RequestsPerMinute":
            timeseries = self._series(endpoint, filters, start, last, grain)
        return {
            "id": f"{resource}/providers/Microsoft.Insights/metrics/{name}",
            "type": "Microsoft.Insights/metrics",
            "name": {"value": name, "localizedValue": name},
            "displayDescription": "",
            "unit": unit,
            "timeseries": timeseries,
            "errorCode": "Success",
        }

    def _series(
        self, endpoint: str, filters: Mapping[str, str], start: int, last: int, grain: int
    ) -> list[dict[str, Any]]:
        split = sorted(d for d, v in filters.items() if v == "*")
        grouped: dict[tuple[str, ...], Counter[int]] = {}
        with self.lock:
            observed = list(self.observed.items())
        for (ep, minute, dims), calls in observed:
            values = dict(dims)
            if ep != endpoint or not start <= minute <= last:
                continue
            if any(v != "*" and values[d] != v for d, v in filters.items()):
                continue
            key = tuple(values[d] for d in split)
            grouped.setdefault(key, Counter())[minute - (minute - start) % grain] += calls
        return [
            {
                "metadatavalues": [
                    {"name": {"value": d.lower(), "localizedValue": d}, "value": v}
                    for d, v in zip(split, key, strict=True)
                ],
                "data": [
                    {"timeStamp": _iso(_stamp(m)), "total": float(counts[m])}
                    for m in range(start, last + 1, grain)
                ],
            }
            for key, counts in sorted(grouped.items())
        ]


def _problem(params: Mapping[str, str]) -> str | None:
    """What Azure Monitor refuses in a query's parameters, None when it is good."""
    names = params.get("metricnames", "")
    unknown = [n for n in names.split(",") if n not in METRICS]
    if not names or unknown:
        return (
            f"Failed to find metric configuration for provider: {NAMESPACE}, metric: "
            f"{(unknown or [''])[0]}. Valid metrics: {', '.join(METRICS)}"
        )
    if params.get("interval") not in INTERVALS:
        return f"Invalid interval {params.get('interval')!r}: allowed {sorted(INTERVALS)}."
    try:
        isodate.parse_duration(params.get("timespan", ""))
    except (isodate.ISO8601Error, ValueError):
        return f"Invalid timespan {params.get('timespan')!r}: an ISO 8601 duration is needed."
    wrong = [a for a in params.get("aggregation", "").split(",") if a.lower() not in AGGREGATIONS]
    if "aggregation" in params and wrong:
        return f"Invalid aggregation {wrong[0]!r}."
    return None


def _filter(text: str) -> dict[str, str] | str:
    """The dimension clauses of a ``$filter`` (``dim eq 'v' and ...``), or what is wrong."""
    if not text.strip():
        return {}
    clauses = {}
    for part in re.split(r"\band\b", text):
        match = _CLAUSE.fullmatch(part)
        if match is None:
            return f"Invalid $filter clause {part.strip()!r}."
        clauses[match.group(1)] = match.group(2)
    return clauses


def _stamp(minute: int) -> dt.datetime:
    return BASE + dt.timedelta(minutes=minute)


def _iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
