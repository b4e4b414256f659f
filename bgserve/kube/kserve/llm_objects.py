"""Pure builders of the KServe InferenceService objects of LLM releases.

An LLM release is still one slot of the bgserve image per release: the slot renders the
release's prompt (messages, ``model_config``) and serves KServe's OpenAI routes
(``/openai/v1/chat/completions``) under the deployment's name, running the model itself
(kind ``gguf``: llama.cpp in the slot) or calling an OpenAI-compatible endpoint (kind
``openai``). The base model of an ``openai`` release may itself run in the cluster on
KServe's Hugging Face runtime (:mod:`~bgserve.kube.kserve.hf_runtime`), which
knows nothing of prompts: the release's slot is what puts the prompt in front of it.

The input is :class:`LlmServing`, the few facts a rendering needs, so the renderings do
not depend on how the registry stores an LLM model version.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from bgserve.domain.release import Release
from bgserve.domain.rollout import Route
from bgserve.errors import InvalidInput
from bgserve.kube.client import Obj
from bgserve.kube.kserve.objects import (
    inference_service,
    weighted_route,
)
from bgserve.kube.objects import ANNOTATION_PREFIX, MOUNT_PATH, NO_MLFLOW, SlotMlflow
from bgserve.llm.references import SecretKeyRef as SecretKeyRef
from bgserve.llm.references import check_secret_ref, check_weights_uri
from bgserve.settings.kube import KubeGroup

LlmKind = Literal["gguf", "openai"]
LLM_KINDS: tuple[LlmKind, ...] = ("gguf", "openai")
OPENAI_PREFIX = "/openai/v1"
# Where the slot finds weights a storage initializer downloaded (kind gguf, weights_uri set).
WEIGHTS_DIR_ENV = "BGSERVE_LLM_WEIGHTS_DIR"

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class LlmServing:
    """What a Kubernetes rendering needs to know of an LLM release's base model.

    - ``kind``: ``gguf`` (a GGUF file run by llama.cpp in the slot) or ``openai`` (an
      OpenAI-compatible endpoint the slot calls).
    - ``served_model_name``: the model id the endpoint knows (``openai``); for ``gguf`` the
      name recorded in the annotations.
    - ``weights_uri``: where a storage initializer fetches the GGUF from (``s3://``,
      ``gs://``, ``hf://``, ``pvc://``); None: the slot loads it with the bundle.
    - ``openai_url``: base URL of the endpoint (``openai`` only).
    - ``api_key_env`` / ``api_key_secret``: the environment variable the slot reads the
      endpoint's key from, filled from that Secret key. The key itself is never an input.

    Raises:
        InvalidInput: naming the field, for a field that does not fit the kind.
    """

    kind: LlmKind
    served_model_name: str
    weights_uri: str | None = None
    openai_url: str | None = None
    api_key_env: str | None = None
    api_key_secret: SecretKeyRef | None = None

    def __post_init__(self) -> None:
        if self.kind not in LLM_KINDS:
            raise InvalidInput(f"llm kind {self.kind!r} is not one of {LLM_KINDS}", field="kind")
        if not self.served_model_name:
            raise InvalidInput("served_model_name must not be empty", field="served_model_name")
        if self.kind == "openai" and not self.openai_url:
            raise InvalidInput("an openai LLM needs openai_url", field="openai_url")
        if self.kind == "gguf" and (self.openai_url or self.api_key_env or self.api_key_secret):
            raise InvalidInput(
                "a gguf LLM runs in the slot: drop openai_url and the API key reference",
                field="openai_url",
            )
        if self.kind == "openai" and self.weights_uri:
            raise InvalidInput(
                "an openai LLM is served by its endpoint: drop weights_uri (render the "
                "endpoint with hf_runtime.hf_runtime_inference_service)",
                field="weights_uri",
            )
        if self.weights_uri is not None:
            check_weights_uri(self.weights_uri, field="weights_uri")
        self._check_key_reference()

    def _check_key_reference(self) -> None:
        if self.api_key_env is not None and not _ENV_NAME.fullmatch(self.api_key_env):
            raise InvalidInput(
                f"api_key_env {self.api_key_env!r} is not an environment variable name",
                field="api_key_env",
            )
        secret = self.api_key_secret
        if secret is None:
            return
        if not self.api_key_env:
            raise InvalidInput(
                "api_key_secret needs api_key_env, the variable the slot reads it from",
                field="api_key_env",
            )
        check_secret_ref(secret)


def llm_annotations(llm: LlmServing) -> dict[str, str]:
    """What an LLM slot's object says about its base model (never a credential)."""
    annotations = {
        f"{ANNOTATION_PREFIX}llm-kind": llm.kind,
        f"{ANNOTATION_PREFIX}llm-model": llm.served_model_name,
    }
    if llm.openai_url:
        annotations[f"{ANNOTATION_PREFIX}llm-endpoint"] = llm.openai_url
    if llm.weights_uri:
        annotations[f"{ANNOTATION_PREFIX}llm-weights-uri"] = llm.weights_uri
    return annotations


def api_key_env(llm: LlmServing) -> list[Obj]:
    """The env entry that fills ``api_key_env`` from the Secret, when one is named."""
    if llm.api_key_secret is None or not llm.api_key_env:
        return []
    ref = {"name": llm.api_key_secret.name, "key": llm.api_key_secret.key}
    return [{"name": llm.api_key_env, "valueFrom": {"secretKeyRef": ref}}]


def llm_slot_container(
    container: Obj,
    release: Release,
    llm: LlmServing,
    kube: KubeGroup,
    mlflow: SlotMlflow = NO_MLFLOW,
) -> Obj:
    """``container`` (the bgserve slot container) adapted to ``llm``: the API key from its
    Secret, and for a GGUF fetched by the storage initializer, that file in ``/mnt/models``
    while the bundle comes from the registry (one storage URI per container)."""
    env = list(container.get("env", []))
    args = list(container["args"])
    if llm.weights_uri:
        args[args.index("--model-uri") + 1] = release.bundle_uri
        registry = [
            {"name": "MLFLOW_TRACKING_URI", "value": mlflow.tracking_uri},
            {"name": "MLFLOW_REGISTRY_URI", "value": mlflow.registry_uri},
        ]
        env = [e for e in registry if e["value"]]
        env += [
            {"name": "STORAGE_URI", "value": llm.weights_uri},
            {"name": WEIGHTS_DIR_ENV, "value": MOUNT_PATH},
        ]
    return {**container, "args": args, "env": env + api_key_env(llm)}


def llm_inference_service(
    deployment: str,
    release: Release,
    llm: LlmServing,
    kube: KubeGroup,
    mlflow: SlotMlflow = NO_MLFLOW,
) -> Obj:
    """The InferenceService of an LLM release: the bgserve slot as custom predictor,
    serving the release under the deployment's name on OIP and on KServe's OpenAI routes."""
    isvc = inference_service(deployment, release, kube, mlflow)
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    predictor["containers"] = [llm_slot_container(container, release, llm, kube, mlflow)]
    metadata = isvc["metadata"]
    metadata["annotations"] = {**metadata["annotations"], **llm_annotations(llm)}
    return isvc


def openai_path(deployment: str) -> str:
    """The gateway path prefix of the deployment's OpenAI routes (rewritten to
    ``/openai/v1`` on the way to a slot): the ``base_url`` an OpenAI client is given."""
    return f"/{deployment}{OPENAI_PREFIX}"


def llm_weighted_route(
    deployment: str, routes: Sequence[Route], kube: KubeGroup, mlflow: SlotMlflow = NO_MLFLOW
) -> Obj:
    """The deployment's weighted route with the OpenAI routes beside ``/v2/models/...``:
    ``/<deployment>/openai/v1/...`` goes, by the same weights, to a slot's ``/openai/v1/...``.

    Raises:
        InvalidInput: the weights do not sum to 100 or a release appears twice.
    """
    route = weighted_route(deployment, routes, kube)
    spec = route["spec"]
    if "rules" in spec:
        (oip,) = spec["rules"]
        spec["rules"] = [oip, _openai_rule(deployment, oip["backendRefs"])]
    else:
        (oip,) = spec["http"]
        spec["http"] = [_openai_http(deployment, oip["route"]), oip]
    return route


def _openai_rule(deployment: str, backend_refs: list[Obj]) -> Obj:
    rewrite = {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": OPENAI_PREFIX}}
    return {
        "matches": [{"path": {"type": "PathPrefix", "value": openai_path(deployment)}}],
        "filters": [{"type": "URLRewrite", "urlRewrite": rewrite}],
        "backendRefs": [dict(ref) for ref in backend_refs],
        # A generation or a stream can outlast any gateway default: no request timeout,
        # as KServe's own LLM routes.
        "timeouts": {"request": "0s", "backendRequest": "0s"},
    }


def _openai_http(deployment: str, destinations: list[Obj]) -> Obj:
    prefix = openai_path(deployment)
    return {
        "name": "openai",
        "match": [{"uri": {"prefix": prefix + "/"}}],
        "rewrite": {"uri": OPENAI_PREFIX + "/"},
        # No timeout: Istio's default is none (its CRD refuses "0s").
        "route": [dict(d) for d in destinations],
    }


def kserve_llm_objects(
    deployment: str,
    routes: Sequence[Route],
    releases: Mapping[int, Release],
    llms: Mapping[int, LlmServing],
    kube: KubeGroup,
    mlflow: SlotMlflow = NO_MLFLOW,
) -> list[Obj]:
    """Every object the KServe backend applies for an LLM deployment: one InferenceService
    per routed release (LLM releases as :func:`llm_inference_service`), then the weighted
    route with the OpenAI routes.

    Raises:
        InvalidInput: bad weights, or a routed release missing from ``releases``.
    """
    missing = [r.release_id for r in routes if r.release_id not in releases]
    if missing:
        raise InvalidInput(f"routes of {deployment} name unknown releases {missing}")
    services = []
    for r in routes:
        release, llm = releases[r.release_id], llms.get(r.release_id)
        services.append(
            inference_service(deployment, release, kube, mlflow)
            if llm is None
            else llm_inference_service(deployment, release, llm, kube, mlflow)
        )
    return [*services, llm_weighted_route(deployment, routes, kube)]
