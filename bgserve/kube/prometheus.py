"""Live traffic per release read from Prometheus: the Kubernetes backends' traffic source.

The rollout engine's analysis needs, per release of a deployment, cumulative requests,
errors and a latency histogram (see :class:`bgserve.app.ports.TrafficSource`). On
Kubernetes the router that splits the traffic (a mesh, a gateway, Knative, Seldon) already
counts it and Prometheus scrapes it; :class:`PrometheusTraffic` asks Prometheus' HTTP API
three instant queries per reading, each a configurable template (see
:mod:`bgserve.kube.prometheus_queries`) wrapped in ``sum by (<workload label>)``,
and reads the release id back from that label's value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from bgserve.domain.window import SideWindow
from bgserve.errors import InvalidInput, Unavailable
from bgserve.kube.prometheus_queries import (
    ROUTERS,
    check_template,
    cumulative_to_buckets,
    promql_string,
    render,
    workload_names,
)
from bgserve.settings import KubeGroup

_UNIT_MS = {"ms": 1.0, "s": 1000.0}


@dataclass(frozen=True)
class _Queries:
    requests: str
    errors: str
    latency_buckets: str
    label: str
    unit_ms: float


def _queries(kube: KubeGroup) -> _Queries:
    defaults = ROUTERS[kube.prometheus.router]
    chosen = {
        "prometheus_requests_query": kube.prometheus.requests_query or defaults.requests,
        "prometheus_errors_query": kube.prometheus.errors_query or defaults.errors,
        "prometheus_latency_bucket_query": kube.prometheus.latency_bucket_query
        or defaults.latency_buckets,
    }
    for setting, template in chosen.items():
        check_template(setting, template)
    label = kube.prometheus.workload_label or defaults.workload_label
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", label):
        raise InvalidInput(
            f"prometheus_workload_label {label!r} is not a Prometheus label name",
            field="prometheus_workload_label",
        )
    unit = kube.prometheus.latency_unit
    return _Queries(
        chosen["prometheus_requests_query"],
        chosen["prometheus_errors_query"],
        chosen["prometheus_latency_bucket_query"],
        label,
        _UNIT_MS[defaults.latency_unit if unit == "auto" else unit],
    )


class PrometheusTraffic:
    """:class:`~bgserve.app.ports.TrafficSource` of the Kubernetes backends, from Prometheus.

    Templates, label and URL are checked when it is built (InvalidInput naming the
    setting). Each :meth:`windows` call makes three instant queries (two when no latency
    template is set: the windows then carry no histogram).
    """

    def __init__(self, kube: KubeGroup, backend: str, http: httpx.Client | None = None) -> None:
        if not kube.prometheus.url:
            raise InvalidInput(
                "prometheus_url is empty: set BGSERVE_PROMETHEUS_URL to the Prometheus that "
                "scrapes the router's metrics",
                field="prometheus_url",
            )
        self._queries = _queries(kube)
        self._names = workload_names(kube, backend)
        self._namespace = kube.namespace
        self._url = kube.prometheus.url.rstrip("/")
        self._timeout = kube.prometheus.timeout_seconds
        self._own_http = http is None
        self._http = http or httpx.Client(timeout=kube.prometheus.timeout_seconds)

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._own_http:
            self._http.close()

    def windows(self, deployment: str) -> dict[int, SideWindow]:
        """Cumulative requests, errors and latency histogram per release id of
        ``deployment``, as Prometheus last scraped them. Releases Prometheus has no series
        for are missing. Counters reset by a pod restart make the sums drop (the analysis
        then counts from zero). No side effects.

        Raises:
            Unavailable: Prometheus cannot be reached or refuses a query (naming it).
        """
        q = self._queries
        requests = self._sums(deployment, "prometheus_requests_query", q.requests)
        errors = self._sums(deployment, "prometheus_errors_query", q.errors)
        buckets = self._histograms(deployment) if q.latency_buckets else {}
        return {
            release: SideWindow(
                round(requests.get(release, 0.0)),
                round(errors.get(release, 0.0)),
                cumulative_to_buckets(buckets.get(release, {}), q.unit_ms),
            )
            for release in sorted({*requests, *errors, *buckets})
        }

    def _sums(self, deployment: str, setting: str, template: str) -> dict[int, float]:
        sums: dict[int, float] = {}
        for release, _, value in self._series(deployment, setting, template, by_le=False):
            sums[release] = sums.get(release, 0.0) + value
        return sums

    def _histograms(self, deployment: str) -> dict[int, dict[float, float]]:
        setting, template = "prometheus_latency_bucket_query", self._queries.latency_buckets
        histograms: dict[int, dict[float, float]] = {}
        for release, labels, value in self._series(deployment, setting, template, by_le=True):
            le = _le(setting, labels)
            per_le = histograms.setdefault(release, {})
            per_le[le] = per_le.get(le, 0.0) + value
        return histograms

    def _series(
        self, deployment: str, setting: str, template: str, *, by_le: bool
    ) -> Iterator[tuple[int, Mapping[str, str], float]]:
        label = self._queries.label
        selector = render(template, self._values(deployment))
        promql = f"sum by ({label}{', le' if by_le else ''}) ({selector})"
        for labels, value in self._query(setting, promql):
            release = self._names.release_of(deployment, labels.get(label, ""))
            if release is not None and math.isfinite(value):
                yield release, labels, value

    def _values(self, deployment: str) -> dict[str, str]:
        return {
            "namespace": promql_string(self._namespace),
            "deployment": promql_string(deployment),
            "release_id": "[0-9]+",
            "workload": promql_string(self._names.pattern(deployment)),
        }

    def _query(self, setting: str, promql: str) -> list[tuple[dict[str, str], float]]:
        """One instant query's vector as (labels, value) pairs; foreign errors translated."""
        endpoint = f"{self._url}/api/v1/query"
        try:
            response = self._http.post(endpoint, data={"query": promql}, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise Unavailable(
                f"Prometheus at {self._url} cannot be reached for {setting}: {exc}",
                hint="retry",
            ) from exc
        body = _json(response, setting, self._url)
        if body.get("status") != "success":
            raise Unavailable(
                f"Prometheus refused {setting} ({promql}): {body.get('errorType', 'error')}: "
                f"{body.get('error', 'no message')}",
                details={"setting": setting, "query": promql},
            )
        data = body.get("data") or {}
        if data.get("resultType") != "vector":
            raise Unavailable(
                f"Prometheus answered {setting} ({promql}) with a "
                f"{data.get('resultType')}, not an instant vector",
                details={"setting": setting, "query": promql},
            )
        return [_sample(setting, item) for item in data.get("result", [])]


def _json(response: httpx.Response, setting: str, url: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise Unavailable(
            f"Prometheus at {url} answered {setting} with HTTP {response.status_code} and no "
            "JSON; is prometheus_url the Prometheus server's base URL?",
            hint="retry",
        ) from exc
    if not isinstance(body, dict):
        raise Unavailable(f"Prometheus at {url} answered {setting} with unexpected JSON")
    return body


def _sample(setting: str, item: Mapping[str, Any]) -> tuple[dict[str, str], float]:
    try:
        return dict(item["metric"]), float(item["value"][1])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise Unavailable(f"Prometheus answered {setting} with a malformed sample") from exc


def _le(setting: str, labels: Mapping[str, str]) -> float:
    try:
        return float(labels["le"])
    except (KeyError, ValueError) as exc:
        raise Unavailable(
            f"{setting} must select histogram `_bucket` series: a series has no numeric `le`",
            details={"setting": setting},
        ) from exc
