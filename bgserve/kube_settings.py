"""The Kubernetes backends' settings (KServe, Seldon, Prometheus for live analysis).

A group of :class:`bgserve.settings.Settings`, kept apart so the settings read by topic;
the fields are Settings' own (same ``BGSERVE_`` variables, same validation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class KubeSettings(BaseModel):
    """Where bgserve writes its Kubernetes objects and how it reads them back."""

    kube_api_url: str = Field(
        "",
        description="Explicit Kubernetes API server URL (e.g. `kubectl proxy` on "
        "http://127.0.0.1:8001); empty means in-cluster config, else the kubeconfig.",
    )
    kube_config: Path | None = Field(
        None, description="Kubeconfig file used outside a cluster; the usual default when unset."
    )
    kube_context: str = Field("", description="Kubeconfig context; the current one when empty.")
    kube_namespace: str = Field(
        "default",
        description="Namespace of every object bgserve creates for KServe or Seldon "
        "(the manifests set it to bgserve's own namespace).",
    )
    kube_poll_interval_seconds: float = Field(
        2.0,
        gt=0,
        description="How often a Kubernetes slot's readiness is polled where the API "
        "refuses watches (readiness is otherwise followed by a watch).",
    )
    kube_resync_seconds: float = Field(
        30.0,
        gt=0,
        description="While waiting for a Kubernetes slot, its object is read again at least "
        "this often, whatever the watch delivered.",
    )
    kube_write_retries: int = Field(
        5, ge=1, le=50, description="Attempts of one write that keeps losing 409 conflicts."
    )
    kube_slot_image: str = Field(
        "bgserve:0.1.0",
        description="Image of the slot containers; runs `bgserve slot` (build it from the "
        "Dockerfile so the bundle is loaded by the MLflow version that built it).",
    )
    kube_slot_service_account: str = Field(
        "",
        description="Service account of the slot pods (e.g. one holding storage credentials "
        "for the storage initializer); the namespace default when empty.",
    )
    kube_slot_cpu: str = Field("1", description="CPU request and limit of one slot container.")
    kube_slot_memory: str = Field(
        "2Gi", description="Memory request and limit of one slot container."
    )
    kube_bundle_storage_uri: str = Field(
        "",
        description="Template of the storage URI a bundle's artifacts are fetched from "
        "(`s3://...`, `gs://...`, `pvc://...`), with `{bundle_name}`, `{bundle_version}`, "
        "`{release}` and `{release_id}`; the storage initializer downloads it to /mnt/models. "
        "Empty: the slot loads `models:/<bundle>/<version>` from the MLflow registry itself.",
    )
    kube_gateway_name: str = Field(
        "kserve-ingress-gateway",
        description="Gateway the weighted route attaches to (Gateway API Gateway, or Istio "
        "Gateway with BGSERVE_KSERVE_ROUTER=istio).",
    )
    kube_gateway_namespace: str = Field(
        "kserve", description="Namespace of that Gateway; bgserve's namespace when empty."
    )
    kube_route_hostname: str = Field(
        "",
        description="Hostname the weighted route serves, `{deployment}` and `{namespace}` "
        "substituted, e.g. `{deployment}.models.example.com`; empty matches any host "
        "(routes are told apart by the path `/v2/models/<deployment>`).",
    )
    kube_data_plane_url: str = Field(
        "",
        description="Base URL of the weighted route (the gateway's address), `{deployment}` "
        "and `{namespace}` substituted; defaults to http://<hostname> when a hostname is set. "
        "A deployment's data_plane_url is this plus /v2/models/<deployment>/infer.",
    )
    kserve_router: Literal["gateway", "istio"] = Field(
        "gateway",
        description="Weighted route in front of a deployment's InferenceServices: a Gateway "
        "API HTTPRoute, or an Istio VirtualService.",
    )
    kserve_deployment_mode: str = Field(
        "",
        description="`serving.kserve.io/deploymentMode` annotation of the InferenceServices "
        "(`Standard`, `RawDeployment` on older KServe, or `Knative`); empty keeps the "
        "cluster default.",
    )
    seldon_flavour: Literal["v1", "v2"] = Field(
        "v2",
        description="Seldon Core generation: `v2` (mlops.seldon.io Model per release plus one "
        "Experiment per deployment) or `v1` (one SeldonDeployment per deployment, one "
        "predictor per release).",
    )
    seldon_server: str = Field(
        "",
        description="Seldon v2: the Server every Model is pinned to (`spec.server`); empty "
        "lets the scheduler pick one whose capabilities meet `seldon_requirements`.",
    )
    seldon_requirements: list[str] = Field(
        default_factory=lambda: ["bgserve"],
        description="Seldon v2: capabilities a Server needs to load a bundle, as JSON, e.g. "
        '["bgserve"] for a Server built from the bgserve image.',
    )
    seldon_slot_endpoint: str = Field(
        "",
        description="Seldon v2: URL template reaching one Model directly, bypassing the "
        "Experiment, with `{model}`, `{deployment}`, `{release_id}` and `{namespace}` (e.g. "
        "a gateway route that sets `seldon-model: {model}`); empty reports "
        "http://seldon-mesh.<namespace>, which needs that header.",
    )
    seldon_experiment_default: bool = Field(
        False,
        description="Seldon v2: also make the live Model the Experiment's `default`, so "
        "clients calling that Model's own name are split too (until the next cutover).",
    )
    prometheus_url: str = Field(
        "",
        description="Base URL of the Prometheus HTTP API the live analysis reads per-release "
        "counts from on KServe and Seldon (e.g. http://prometheus.monitoring:9090).",
    )
    prometheus_router: Literal["istio", "gateway", "kserve", "seldon"] = Field(
        "istio",
        description="Whose metrics count each release's traffic, choosing the default query "
        "templates: `istio` (istio_requests_total), `gateway` (Envoy cluster stats of a "
        "Gateway API implementation), `kserve` (Knative queue-proxy of KServe's Serverless "
        "mode) or `seldon` (Seldon Core 2 seldon_model_infer_total).",
    )
    prometheus_requests_query: str = Field(
        "",
        description="PromQL instant vector of the cumulative request counter, with "
        "`{namespace}`, `{deployment}`, `{release_id}` and `{workload}` (regexes, so match "
        'them with `=~"..."`); bgserve wraps it in `sum by (<workload label>)`. Empty: the '
        "router's default.",
    )
    prometheus_errors_query: str = Field(
        "",
        description="Like `prometheus_requests_query`, counting only failed requests (5xx); "
        "empty: the router's default.",
    )
    prometheus_latency_bucket_query: str = Field(
        "",
        description="Like `prometheus_requests_query`, selecting the latency histogram's "
        "`_bucket` series (summed by workload label and `le`); empty: the router's default, "
        "which is none for `seldon` (its histogram has no model label).",
    )
    prometheus_workload_label: str = Field(
        "",
        description="Label whose value names a release's workload (the release id is read "
        "from it); empty: the router's default (e.g. destination_workload for istio).",
    )
    prometheus_latency_unit: Literal["auto", "ms", "s"] = Field(
        "auto",
        description="Unit of the latency histogram's `le` bounds; `auto`: the router's "
        "(ms for istio, gateway and kserve, s for seldon).",
    )
    prometheus_timeout_seconds: float = Field(
        5.0, gt=0, description="Timeout of one Prometheus query by the live analysis."
    )
