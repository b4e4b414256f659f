"""The pure half of the Prometheus traffic source: query templates per router, workload
names and release ids, and Prometheus histograms mapped onto bgserve's latency buckets.

Templates are PromQL instant vectors with four placeholders, substituted as RE2 regexes
inside double-quoted label matchers (so match them with ``=~``): ``{workload}`` matches
the workload name of every release of the deployment (``<isvc>-predictor`` on KServe, and
``<member>-kserve`` for LLMInferenceService members in routing-group mode, the
Model ``<deployment>-r<id>`` on Seldon v2, ``<sdep>-r<id>`` on Seldon v1), ``{release_id}``
any release id, ``{deployment}`` and ``{namespace}`` themselves. Any other ``{name}`` is
refused at start-up; PromQL's own braces (``metric{label="v"}``) are left alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bgserve.domain.latency import LATENCY_BUCKETS_MS, bucket_of
from bgserve.errors import InvalidInput
from bgserve.kube.kserve.llm_isvc import llmisvc_name
from bgserve.kube.kserve.objects import isvc_name
from bgserve.kube.seldon.objects import model_name, sdep_name
from bgserve.settings import KubeGroup

PLACEHOLDERS = frozenset({"namespace", "deployment", "release_id", "workload"})
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Release ids of up to this many digits are recognised in workload names.
_MAX_ID_DIGITS = 12


@dataclass(frozen=True)
class RouterQueries:
    """The default templates, workload label and latency unit of one kind of router."""

    requests: str
    errors: str
    latency_buckets: str
    workload_label: str
    latency_unit: str


_ISTIO = (
    'reporter="destination",destination_workload_namespace="{namespace}",'
    'destination_workload=~"{workload}.*"'
)
_ENVOY = 'envoy_cluster_name=~".*{workload}.*"'
_KNATIVE = 'namespace_name="{namespace}",service_name=~"{workload}"'
_SELDON = 'model=~"{workload}"'

ROUTERS: dict[str, RouterQueries] = {
    "istio": RouterQueries(
        f"istio_requests_total{{{_ISTIO}}}",
        f'istio_requests_total{{{_ISTIO},response_code=~"5.."}}',
        f"istio_request_duration_milliseconds_bucket{{{_ISTIO}}}",
        "destination_workload",
        "ms",
    ),
    "gateway": RouterQueries(
        f"envoy_cluster_upstream_rq_total{{{_ENVOY}}}",
        f'envoy_cluster_upstream_rq_xx{{{_ENVOY},envoy_response_code_class="5"}}',
        f"envoy_cluster_upstream_rq_time_bucket{{{_ENVOY}}}",
        "envoy_cluster_name",
        "ms",
    ),
    "kserve": RouterQueries(
        f"revision_app_request_count{{{_KNATIVE}}}",
        f'revision_app_request_count{{{_KNATIVE},response_code_class="5xx"}}',
        f"revision_app_request_latencies_bucket{{{_KNATIVE}}}",
        "service_name",
        "ms",
    ),
    "seldon": RouterQueries(
        f"seldon_model_infer_total{{{_SELDON}}}",
        f'seldon_model_infer_total{{{_SELDON},code=~"5..|Unknown|Internal|Unavailable|'
        f'DataLoss|DeadlineExceeded"}}',
        "",
        "model",
        "s",
    ),
}
"""Defaults per ``prometheus_router``: see docs/analysis.md for where each comes from."""


def check_template(setting: str, template: str) -> None:
    """Refuse a template naming a placeholder bgserve does not fill.

    Raises:
        InvalidInput: naming ``setting`` and the unknown placeholder.
    """
    unknown = sorted({m for m in _PLACEHOLDER.findall(template) if m not in PLACEHOLDERS})
    if unknown:
        known = ", ".join(f"{{{p}}}" for p in sorted(PLACEHOLDERS))
        raise InvalidInput(
            f"{setting} uses unknown placeholder(s) {', '.join(f'{{{u}}}' for u in unknown)}; "
            f"the known ones are {known}",
            field=setting,
        )


def render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each known ``{placeholder}`` replaced by its value."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _regex_escape(text: str) -> str:
    """``text`` as a regex matching itself, in the syntax shared by Python and RE2."""
    return re.sub(r"([^A-Za-z0-9_-])", r"\\\1", text)


def promql_string(text: str) -> str:
    """``text`` escaped for the inside of a double-quoted PromQL string."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def cumulative_to_buckets(cumulative: Mapping[float, float], unit_ms: float) -> tuple[int, ...]:
    """Per-bucket counts on :data:`LATENCY_BUCKETS_MS` from Prometheus' cumulative ``le``
    buckets (``le`` in units of ``unit_ms`` milliseconds, ``inf`` for +Inf).

    Each source bucket's own count (its cumulative count minus the previous one) goes to
    the bgserve bucket that contains its upper bound. When the source buckets are coarser
    than bgserve's, every latency is thus read as its source bucket's upper bound: a p95
    taken from the result is at most one source bucket too high, never too low, and both
    sides of a comparison are read the same way. Empty input gives an empty histogram.
    """
    if not cumulative:
        return ()
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    previous = 0.0
    for le in sorted(cumulative):
        value = cumulative[le]
        # Series scraped at slightly different instants can dip; a dip is no traffic.
        counts[_bucket_of_bound(le, unit_ms)] += max(0, round(value - previous))
        previous = max(previous, value)
    return tuple(counts)


def _bucket_of_bound(le: float, unit_ms: float) -> int:
    if math.isinf(le):
        return len(LATENCY_BUCKETS_MS)
    return bucket_of(round(le * unit_ms, 6))


class WorkloadNames:
    """How a backend names a release's workload (one way or several: KServe's
    InferenceService predictor and LLMInferenceService member), and the way back from a
    name to its id."""

    def __init__(self, *names_of: Callable[[str, int], str]) -> None:
        self._names_of = names_of

    def _name_of(self, deployment: str, release_id: int) -> set[str]:
        return {name_of(deployment, release_id) for name_of in self._names_of}

    def _shapes(self, deployment: str) -> set[tuple[str, str]]:
        # Long names are cut to fit with a hash, and the cut depends on the id's length.
        shapes = set()
        for digits in range(1, _MAX_ID_DIGITS + 1):
            sentinel = "9" * digits
            for name in self._name_of(deployment, int(sentinel)):
                at = name.rfind(f"-r{sentinel}")
                shapes.add((name[: at + 2], name[at + 2 + digits :]))
        return shapes

    def pattern(self, deployment: str) -> str:
        """An RE2 regex matching every release's workload name of ``deployment``."""
        shapes = self._shapes(deployment)
        parts = sorted(f"{_regex_escape(p)}[0-9]+{_regex_escape(s)}" for p, s in shapes)
        return parts[0] if len(parts) == 1 else f"(?:{'|'.join(parts)})"

    def release_of(self, deployment: str, value: str) -> int | None:
        """The release id whose workload name ``value`` holds (as a whole name, followed by
        a pod or revision suffix, or after a ``/``), or None."""
        for prefix, suffix in self._shapes(deployment):
            tail = rf"([0-9]+){_regex_escape(suffix)}(?![a-z0-9])"
            found = re.search(rf"(?:^|[^a-z0-9-]){_regex_escape(prefix)}{tail}", value)
            if found is None or (prefix + found[1] + suffix) not in self._name_of(
                deployment, int(found[1])
            ):
                continue  # the name of the id read must be the name read: r007 is not r7
            if re.search(rf"-r{tail}", value[found.end() :]) is None:
                return int(found[1])
            # else a longer deployment's name that starts like ours ("shop-r3-x-r1")
        return None


def _predictor(deployment: str, release_id: int) -> str:
    return f"{isvc_name(deployment, release_id)}-predictor"


def workload_names(kube: KubeGroup, backend: str) -> WorkloadNames:
    """The workload naming of the configured Kubernetes backend.

    Raises:
        InvalidInput: the backend is not a Kubernetes one, or Seldon v1 with the seldon router.
    """
    if backend == "kserve":
        if kube.kserve.llm_mode != "llminferenceservice":
            return WorkloadNames(_predictor)
        # A routing group's member runs as KServe's main workload, <member>-kserve.
        return WorkloadNames(_predictor, lambda d, r: f"{llmisvc_name(d, r)}-kserve")
    if backend == "seldon" and kube.seldon.flavour == "v2":
        return WorkloadNames(model_name)
    if backend == "seldon":
        if kube.prometheus.router == "seldon":
            raise InvalidInput(
                "prometheus_router `seldon` reads Seldon Core 2 metrics; with seldon_flavour "
                "v1 choose istio or gateway, or give your own query templates",
                field="prometheus_router",
            )
        return WorkloadNames(lambda d, r: f"{sdep_name(d)}-r{r}")
    raise InvalidInput(
        f"Prometheus traffic serves the kserve and seldon backends, not {backend}",
        field="backend",
    )
