"""The Kubernetes backends' settings (``settings.kube``): the cluster, the slots' pods,
the weighted route, and the KServe, Seldon and Prometheus groups within it.

Flat variables as ever: ``BGSERVE_KUBE_<FIELD>``, ``BGSERVE_KSERVE_<FIELD>``,
``BGSERVE_SELDON_<FIELD>``, ``BGSERVE_PROMETHEUS_<FIELD>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from bgserve.settings.groups import Group, spelt_flat


class KServeGroup(Group):
    """How the KServe backend routes between InferenceServices (``BGSERVE_KSERVE_*``)."""

    model_config = spelt_flat("kserve_")

    router: Literal["gateway", "istio"] = Field(
        "gateway",
        description="Weighted route in front of a deployment's InferenceServices: a Gateway "
        "API HTTPRoute, or an Istio VirtualService.",
    )
    deployment_mode: str = Field(
        "",
        description="`serving.kserve.io/deploymentMode` annotation of the InferenceServices "
        "(`Standard`, `RawDeployment` on older KServe, or `Knative`); empty keeps the "
        "cluster default.",
    )
    llm_mode: Literal["inferenceservice", "llminferenceservice"] = Field(
        "inferenceservice",
        description="How an LLM release's slot runs: `inferenceservice` (an InferenceService "
        "behind bgserve's weighted route, with OpenAI routes) or `llminferenceservice` (a "
        "v1alpha2 LLMInferenceService per release, members of one KServe routing group named "
        "after the deployment, the split carried in their weights; bgserve writes no route "
        "for such a deployment). The second needs the llminferenceservices rule of "
        "docs/kserve.md in the Role.",
    )


class SeldonGroup(Group):
    """Which Seldon Core generation and Server the Seldon backend uses
    (``BGSERVE_SELDON_*``)."""

    model_config = spelt_flat("seldon_")

    flavour: Literal["v1", "v2"] = Field(
        "v2",
        description="Seldon Core generation: `v2` (mlops.seldon.io Model per release plus one "
        "Experiment per deployment) or `v1` (one SeldonDeployment per deployment, one "
        "predictor per release).",
    )
    server: str = Field(
        "",
        description="Seldon v2: the Server every Model is pinned to (`spec.server`); empty "
        "lets the scheduler pick one whose capabilities meet `seldon_requirements`.",
    )
    requirements: list[str] = Field(
        default_factory=lambda: ["bgserve"],
        description="Seldon v2: capabilities a Server needs to load a bundle, as JSON, e.g. "
        '["bgserve"] for a Server built from the bgserve image.',
    )
    slot_endpoint: str = Field(
        "",
        description="Seldon v2: URL template reaching one Model directly, bypassing the "
        "Experiment, with `{model}`, `{deployment}`, `{release_id}` and `{namespace}` (e.g. "
        "a gateway route that sets `seldon-model: {model}`); empty reports "
        "http://seldon-mesh.<namespace>, which needs that header.",
    )
    experiment_default: bool = Field(
        False,
        description="Seldon v2: also make the live Model the Experiment's `default`, so "
        "clients calling that Model's own name are split too (until the next cutover).",
    )


class PrometheusGroup(Group):
    """Where the live analysis reads per-release counts on KServe and Seldon
    (``BGSERVE_PROMETHEUS_*``)."""

    model_config = spelt_flat("prometheus_")

    url: str = Field(
        "",
        description="Base URL of the Prometheus HTTP API the live analysis reads per-release "
        "counts from on KServe and Seldon (e.g. http://prometheus.monitoring:9090).",
    )
    router: Literal["istio", "gateway", "kserve", "seldon"] = Field(
        "istio",
        description="Whose metrics count each release's traffic, choosing the default query "
        "templates: `istio` (istio_requests_total), `gateway` (Envoy cluster stats of a "
        "Gateway API implementation), `kserve` (Knative queue-proxy of KServe's Serverless "
        "mode) or `seldon` (Seldon Core 2 seldon_model_infer_total).",
    )
    requests_query: str = Field(
        "",
        description="PromQL instant vector of the cumulative request counter, with "
        "`{namespace}`, `{deployment}`, `{release_id}` and `{workload}` (regexes, so match "
        'them with `=~"..."`); bgserve wraps it in `sum by (<workload label>)`. Empty: the '
        "router's default.",
    )
    errors_query: str = Field(
        "",
        description="Like `prometheus_requests_query`, counting only failed requests (5xx); "
        "empty: the router's default.",
    )
    latency_bucket_query: str = Field(
        "",
        description="Like `prometheus_requests_query`, selecting the latency histogram's "
        "`_bucket` series (summed by workload label and `le`); empty: the router's default, "
        "which is none for `seldon` (its histogram has no model label).",
    )
    workload_label: str = Field(
        "",
        description="Label whose value names a release's workload (the release id is read "
        "from it); empty: the router's default (e.g. destination_workload for istio).",
    )
    latency_unit: Literal["auto", "ms", "s"] = Field(
        "auto",
        description="Unit of the latency histogram's `le` bounds; `auto`: the router's "
        "(ms for istio, gateway and kserve, s for seldon).",
    )
    timeout_seconds: float = Field(
        5.0, gt=0, description="Timeout of one Prometheus query by the live analysis."
    )
    read_seconds: float = Field(
        2.0,
        ge=0,
        le=300,
        description="How long live analysis reuses a reading of Prometheus (its counts change "
        "once a scrape; each reading is three queries; 0: every engine tick).",
    )


class KubeGroup(Group):
    """Where bgserve writes its Kubernetes objects and how it reads them back
    (``BGSERVE_KUBE_*``)."""

    model_config = spelt_flat("kube_")

    api_url: str = Field(
        "",
        description="Explicit Kubernetes API server URL (e.g. `kubectl proxy` on "
        "http://127.0.0.1:8001); empty means in-cluster config, else the kubeconfig.",
    )
    config: Path | None = Field(
        None, description="Kubeconfig file used outside a cluster; the usual default when unset."
    )
    context: str = Field("", description="Kubeconfig context; the current one when empty.")
    namespace: str = Field(
        "default",
        description="Namespace of every object bgserve creates for KServe or Seldon "
        "(the manifests set it to bgserve's own namespace).",
    )
    poll_interval_seconds: float = Field(
        2.0,
        gt=0,
        description="How often a Kubernetes slot's readiness is polled where the API "
        "refuses watches (readiness is otherwise followed by a watch).",
    )
    resync_seconds: float = Field(
        30.0,
        gt=0,
        description="While waiting for a Kubernetes slot, its object is read again at least "
        "this often, whatever the watch delivered.",
    )
    write_retries: int = Field(
        5, ge=1, le=50, description="Attempts of one write that keeps losing 409 conflicts."
    )
    slot_image: str = Field(
        "bgserve:0.1.0",
        description="Image of the slot containers; runs `bgserve slot` (build it from the "
        "Dockerfile so the bundle is loaded by the MLflow version that built it).",
    )
    slot_service_account: str = Field(
        "",
        description="Service account of the slot pods (e.g. one holding storage credentials "
        "for the storage initializer); the namespace default when empty.",
    )
    slot_token_secret: str = Field(
        "",
        description="Secret (in bgserve's namespace, key `token`) whose value slot pods take "
        "as BGSERVE_SLOT_TOKEN. With it, each slot keeps a record of the exchanges it answers "
        "while bgserve drains it, which is how shadow traffic through the gateway's mirror is "
        "paired and scored; without it, shadow traffic is refused on Kubernetes. bgserve "
        "sends the same value, given as BGSERVE_KUBE_SLOT_TOKEN.",
    )
    slot_token: str = Field(
        "",
        repr=False,
        description="The value held in `slot_token_secret`, which bgserve sends to drain a "
        "slot's records; needed with it.",
    )
    slot_cpu: str = Field("1", description="CPU request and limit of one slot container.")
    slot_memory: str = Field("2Gi", description="Memory request and limit of one slot container.")
    bundle_storage_uri: str = Field(
        "",
        description="Template of the storage URI a bundle's artifacts are fetched from "
        "(`s3://...`, `gs://...`, `pvc://...`), with `{bundle_name}`, `{bundle_version}`, "
        "`{release}` and `{release_id}`; the storage initializer downloads it to /mnt/models. "
        "Empty: the slot loads `models:/<bundle>/<version>` from the MLflow registry itself.",
    )
    gateway_name: str = Field(
        "kserve-ingress-gateway",
        description="Gateway the weighted route attaches to (Gateway API Gateway, or Istio "
        "Gateway with BGSERVE_KSERVE_ROUTER=istio).",
    )
    gateway_namespace: str = Field(
        "kserve", description="Namespace of that Gateway; bgserve's namespace when empty."
    )
    route_accept_timeout_seconds: float = Field(
        30.0,
        ge=0,
        description="KServe with a Gateway API route: how long a route change waits for the "
        "gateway to report the new spec `Accepted` and `ResolvedRefs` (HTTPRoute "
        "`status.parents`); a refusal, or no report in time, puts the previous route back and "
        "fails the step. 0 does not wait (the step is done once the route is stored).",
    )
    istio_reconcile_timeout_seconds: float = Field(
        0.0,
        ge=0,
        description="KServe with the Istio router: how long a route change waits for istiod "
        "to report the VirtualService `Reconciled` (pushed to every proxy) for its new "
        "generation; no report in time puts the previous route back and fails the step. "
        "Istio writes that status only with PILOT_ENABLE_STATUS and "
        "PILOT_ENABLE_CONFIG_DISTRIBUTION_TRACKING on, hence 0 (do not wait) by default. "
        "The Role then needs `watch` and `delete` on virtualservices.",
    )
    route_hostname: str = Field(
        "",
        description="Hostname the weighted route serves, `{deployment}` and `{namespace}` "
        "substituted, e.g. `{deployment}.models.example.com`; empty matches any host "
        "(routes are told apart by the path `/v2/models/<deployment>`).",
    )
    data_plane_url: str = Field(
        "",
        description="Base URL of the weighted route (the gateway's address), `{deployment}` "
        "and `{namespace}` substituted; defaults to http://<hostname> when a hostname is set. "
        "A deployment's data_plane_url is this plus /v2/models/<deployment>/infer.",
    )
    kserve: KServeGroup = Field(default_factory=KServeGroup)
    seldon: SeldonGroup = Field(default_factory=SeldonGroup)
    prometheus: PrometheusGroup = Field(default_factory=PrometheusGroup)

    @model_validator(mode="after")
    def _slot_token_with_its_secret(self) -> KubeGroup:
        if bool(self.slot_token_secret) != bool(self.slot_token):
            raise ValueError(
                "BGSERVE_KUBE_SLOT_TOKEN_SECRET and BGSERVE_KUBE_SLOT_TOKEN go together: the "
                "Secret the slot pods read the token from, and the same token for bgserve"
            )
        return self
