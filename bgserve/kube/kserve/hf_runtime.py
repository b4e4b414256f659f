"""A base model on KServe's Hugging Face runtime (``kserve-huggingfaceserver``), serving
KServe's OpenAI routes (``/openai/v1/chat/completions``) for an ``openai`` LLM release.

The runtime serves the model only: no prompt is applied there. It is named after the base
model and version, not after a release, so releases that differ only in their prompt share
it; each release's slot renders its prompt and calls it as an OpenAI endpoint at
:func:`hf_openai_url`, the URL the ``openai`` model version registers.
"""

from __future__ import annotations

from collections.abc import Sequence

from bgserve.errors import InvalidInput
from bgserve.kube.client import MANAGED_BY, MANAGER, Obj, dns_label
from bgserve.kube.kserve.llm_objects import OPENAI_PREFIX
from bgserve.kube.kserve.objects import INFERENCE_SERVICE, ISVC_NAME_MAX
from bgserve.kube.objects import ANNOTATION_PREFIX, NO_MLFLOW, SlotMlflow
from bgserve.settings.kube import KubeGroup

HF_MODEL_FORMAT = "huggingface"
HF_SERVER_LABEL = "bgserve.io/llm-server"


def hf_server_name(model: str, version: int) -> str:
    """Name of the InferenceService serving base model ``model`` version ``version``."""
    return dns_label(
        model.lower().replace("_", "-").replace(".", "-"), f"-v{version}", ISVC_NAME_MAX
    )


def hf_openai_url(name: str, namespace: str) -> str:
    """The in-cluster OpenAI base URL of the Hugging Face runtime InferenceService ``name``:
    what an ``openai`` model version registers as its URL."""
    return f"http://{name}-predictor.{namespace}.svc.cluster.local{OPENAI_PREFIX}"


def hf_runtime_inference_service(
    name: str,
    weights_uri: str,
    served_model_name: str,
    kube: KubeGroup,
    mlflow: SlotMlflow = NO_MLFLOW,
    *,
    extra_args: Sequence[str] = (),
) -> Obj:
    """A base model on KServe's Hugging Face runtime (``kserve-huggingfaceserver``), serving
    ``/openai/v1/chat/completions`` for ``served_model_name``; no prompt is applied there.

    Raises:
        InvalidInput: an empty weights URI or model name.
    """
    if not weights_uri:
        raise InvalidInput("weights_uri must name the model's storage", field="weights_uri")
    if not served_model_name:
        raise InvalidInput("served_model_name must not be empty", field="served_model_name")
    resources = {"cpu": kube.slot_cpu, "memory": kube.slot_memory}
    model: Obj = {
        "modelFormat": {"name": HF_MODEL_FORMAT},
        "storageUri": weights_uri,
        # The runtime's own --model_name={{.Name}} comes first; the last one wins.
        "args": [f"--model_name={served_model_name}", *extra_args],
        "resources": {"requests": resources, "limits": dict(resources)},
    }
    predictor: Obj = {"minReplicas": 1, "model": model}
    if kube.slot_service_account:
        predictor["serviceAccountName"] = kube.slot_service_account
    return {
        "apiVersion": INFERENCE_SERVICE.api_version,
        "kind": INFERENCE_SERVICE.kind,
        "metadata": {
            "name": name,
            "namespace": kube.namespace,
            "labels": {MANAGED_BY: MANAGER, HF_SERVER_LABEL: name},
            "annotations": {f"{ANNOTATION_PREFIX}llm-weights-uri": weights_uri},
        },
        "spec": {"predictor": predictor},
    }
