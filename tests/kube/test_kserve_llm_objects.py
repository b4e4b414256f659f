"""KServe renderings of LLM releases (InferenceServices, the OpenAI routes, the Hugging
Face runtime), validated strictly against the official CRDs."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest

from bgserve.domain.release import DNS1123_LABEL
from bgserve.domain.rollout import Route
from bgserve.errors import InvalidInput
from bgserve.kube.kserve.hf_runtime import (
    hf_openai_url,
    hf_runtime_inference_service,
    hf_server_name,
)
from bgserve.kube.kserve.llm_objects import (
    WEIGHTS_DIR_ENV,
    LlmServing,
    SecretKeyRef,
    kserve_llm_objects,
    llm_inference_service,
    llm_weighted_route,
    openai_path,
)
from bgserve.kube.kserve.objects import ISVC_NAME_MAX, inference_service, routed_weight
from bgserve.kube.objects import SlotMlflow
from bgserve.settings import Settings
from tests.support.crd_schema import Crd, validate_object
from tests.support.kube import RELEASES

SPLIT = [Route("blue", 1, 70), Route("green", 2, 30)]
GGUF = LlmServing("gguf", "smollm2-135m")
OPENAI = LlmServing(
    "openai",
    "meta-llama/Llama-3.1-8B-Instruct",
    openai_url="http://llama-v1-predictor.models.svc.cluster.local/openai/v1",
    api_key_env="LLM_API_KEY",
    api_key_secret=SecretKeyRef("llm-endpoint", "token"),
)
VARIANTS: list[dict[str, Any]] = [
    {},
    {"kserve_router": "istio"},
    {
        "kube_bundle_storage_uri": "s3://mlflow/{bundle_name}/{bundle_version}",
        "kube_route_hostname": "{deployment}.{namespace}.models.example.com",
        "kube_slot_service_account": "model-reader",
        "kserve_deployment_mode": "Standard",
    },
]


def _container(isvc: Mapping[str, Any]) -> dict[str, Any]:
    (container,) = isvc["spec"]["predictor"]["containers"]
    return dict(container)


def _env(container: Mapping[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(
    "llms",
    [{1: GGUF, 2: OPENAI}, {2: GGUF}, {1: LlmServing("gguf", "q", weights_uri="hf://o/m")}],
)
def test_every_llm_object_validates_strictly(
    crds: Mapping[str, Crd], variant: dict[str, Any], llms: dict[int, LlmServing]
) -> None:
    settings = Settings(kube_namespace="models", **variant)
    objects = kserve_llm_objects("chat", SPLIT, RELEASES, llms, settings.kube)
    assert [o["kind"] for o in objects[:2]] == ["InferenceService"] * 2
    for obj in objects:
        assert validate_object(crds, obj) == [], obj


def test_the_validator_sees_a_misspelt_llm_field(crds: Mapping[str, Crd]) -> None:
    isvc = llm_inference_service("chat", RELEASES[2], OPENAI, Settings().kube)
    env = _container(isvc)["env"]
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["containers"][0]["env"][-1]["valueFrom"]["secretKeyRef"] = {
        "secret_name": "llm-endpoint"
    }
    assert env[-1]["valueFrom"]["secretKeyRef"]["name"] == "llm-endpoint"
    assert any("secret_name: unknown field" in e for e in validate_object(crds, bad))


def test_an_openai_release_reads_its_key_from_the_secret_never_the_value() -> None:
    isvc = llm_inference_service(
        "chat", RELEASES[2], OPENAI, Settings(kube_namespace="models").kube
    )
    env = _env(_container(isvc))
    assert env["LLM_API_KEY"] == {"secretKeyRef": {"name": "llm-endpoint", "key": "token"}}
    api_entry = next(e for e in _container(isvc)["env"] if e["name"] == "LLM_API_KEY")
    assert "value" not in api_entry
    annotations = isvc["metadata"]["annotations"]
    assert annotations["bgserve.io/llm-kind"] == "openai"
    assert annotations["bgserve.io/llm-endpoint"] == OPENAI.openai_url
    assert "token" not in json.dumps(annotations)


def test_an_llm_release_is_the_same_slot_as_any_release_plus_its_llm() -> None:
    """The prompt reaches the model through the bgserve slot: same command, same bundle."""
    settings = Settings(kube_namespace="models")
    plain = _container(inference_service("chat", RELEASES[1], settings.kube))
    llm = _container(llm_inference_service("chat", RELEASES[1], GGUF, settings.kube))
    assert llm["command"] == plain["command"] and llm["args"] == plain["args"]
    assert llm["image"] == plain["image"] and llm["readinessProbe"] == plain["readinessProbe"]


def test_a_gguf_from_storage_is_mounted_and_the_bundle_read_from_the_registry() -> None:
    settings = Settings(
        kube_bundle_storage_uri="s3://bundles/{release}",
        mlflow_tracking_uri="http://mlflow.mlops:5000",
        mlflow_registry_uri=None,
    )
    llm = LlmServing("gguf", "smollm2", weights_uri="s3://weights/smollm2.Q4_1.gguf")
    mlflow = SlotMlflow(settings.mlflow_tracking_uri, settings.mlflow_registry_uri)
    container = _container(llm_inference_service("chat", RELEASES[1], llm, settings.kube, mlflow))
    env = _env(container)
    assert env["STORAGE_URI"] == "s3://weights/smollm2.Q4_1.gguf"
    assert env[WEIGHTS_DIR_ENV] == "/mnt/models"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow.mlops:5000"
    model_uri = container["args"][container["args"].index("--model-uri") + 1]
    assert model_uri == RELEASES[1].bundle_uri


@pytest.mark.parametrize("router", ["gateway", "istio"])
def test_openai_routes_follow_the_same_weights(router: str) -> None:
    settings = Settings(kserve_router=router, kube_namespace="models")
    route = llm_weighted_route("chat", SPLIT, settings.kube)
    for r in SPLIT:
        assert routed_weight(route, "chat", r.release_id) == r.weight
    spec = route["spec"]
    if router == "gateway":
        oip, openai = spec["rules"]
        assert openai["matches"][0]["path"]["value"] == openai_path("chat") == "/chat/openai/v1"
        rewrite = openai["filters"][0]["urlRewrite"]["path"]
        assert rewrite["replacePrefixMatch"] == "/openai/v1"
        assert openai["backendRefs"] == oip["backendRefs"]
    else:
        openai, oip = spec["http"]
        assert openai["match"] == [{"uri": {"prefix": "/chat/openai/v1/"}}]
        assert openai["rewrite"] == {"uri": "/openai/v1/"}
        assert openai["route"] == oip["route"]


def test_the_hugging_face_runtime_serves_the_base_model_by_its_served_name(
    crds: Mapping[str, Crd],
) -> None:
    settings = Settings(kube_namespace="models", kube_slot_service_account="model-reader")
    name = hf_server_name("Llama_3.1-8B", 4)
    isvc = hf_runtime_inference_service(
        name,
        "hf://meta-llama/Llama-3.1-8B-Instruct",
        "llama",
        settings.kube,
        extra_args=["--max_model_len=4096"],
    )
    assert validate_object(crds, isvc) == []
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "huggingface"}
    assert model["storageUri"] == "hf://meta-llama/Llama-3.1-8B-Instruct"
    served = [a for a in model["args"] if a.startswith("--model_name=")]
    assert served[-1] == "--model_name=llama"
    url = hf_openai_url(name, "models")
    assert url == f"http://{name}-predictor.models.svc.cluster.local/openai/v1"
    # an openai release registered with that URL renders
    LlmServing("openai", "llama", openai_url=url)


@pytest.mark.parametrize("model", ["Llama_3.1-8B", "7b", "m" * 80])
def test_hf_server_names_fit_kserve(model: str) -> None:
    name = hf_server_name(model, 12)
    assert len(name) <= ISVC_NAME_MAX and DNS1123_LABEL.match(name) and name[0].isalpha()


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"kind": "vllm", "served_model_name": "m"}, "kind"),
        ({"kind": "openai", "served_model_name": "m"}, "openai_url"),
        ({"kind": "gguf", "served_model_name": ""}, "served_model_name"),
        ({"kind": "gguf", "served_model_name": "m", "openai_url": "http://x"}, "openai_url"),
        (
            {"kind": "openai", "served_model_name": "m", "openai_url": "u", "weights_uri": "s"},
            "weights_uri",
        ),
        (
            {"kind": "openai", "served_model_name": "m", "openai_url": "u", "api_key_env": "1X"},
            "api_key_env",
        ),
        (
            {
                "kind": "openai",
                "served_model_name": "m",
                "openai_url": "u",
                "api_key_secret": SecretKeyRef("s"),
            },
            "api_key_env",
        ),
        (
            {
                "kind": "openai",
                "served_model_name": "m",
                "openai_url": "u",
                "api_key_env": "K",
                "api_key_secret": SecretKeyRef("Bad_Secret"),
            },
            "api_key_secret",
        ),
    ],
)
def test_bad_llm_inputs_name_their_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        LlmServing(**fields)
    assert caught.value.field == field


def test_unknown_release_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"unknown releases \[9\]"):
        kserve_llm_objects("chat", [Route("blue", 9, 100)], RELEASES, {}, Settings().kube)
