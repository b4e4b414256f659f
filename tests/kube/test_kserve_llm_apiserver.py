"""The LLM renderings on a real kube-apiserver serving the official CRDs: applied with
strict field validation, stored unpruned, CEL rules evaluated, and a routing group's
weights written member by member in the order bgserve chooses."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from kubernetes import client

from bgserve.domain.rollout import Route
from bgserve.kube.client import Obj, Resource
from bgserve.kube.kserve.hf_runtime import hf_runtime_inference_service
from bgserve.kube.kserve.llm_isvc import (
    LLM_INFERENCE_SERVICE,
    llm_inference_service,
    llmisvc_name,
    llmisvc_objects,
    member_weight,
    weight_writes,
)
from bgserve.kube.kserve.llm_objects import (
    LlmServing,
    SecretKeyRef,
    kserve_llm_objects,
)
from bgserve.kube.kserve.objects import HTTP_ROUTE, INFERENCE_SERVICE, VIRTUAL_SERVICE
from bgserve.settings import Settings
from tests.support.kube import RELEASES
from tests.support.kube_real_apiserver import KubeCluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KINDS = {r.kind: r for r in (INFERENCE_SERVICE, HTTP_ROUTE, VIRTUAL_SERVICE, LLM_INFERENCE_SERVICE)}
LLMS = {
    1: LlmServing("gguf", "smollm2", weights_uri="s3://weights/smollm2.Q4_1.gguf"),
    2: LlmServing(
        "openai",
        "llama",
        openai_url="http://llama-v1-predictor.models.svc.cluster.local/openai/v1",
        api_key_env="LLM_API_KEY",
        api_key_secret=SecretKeyRef("llm-endpoint", "token"),
    ),
}
SPLIT = [Route("blue", 1, 70), Route("green", 2, 30)]


@pytest.fixture
def api(kube_cluster: KubeCluster) -> Iterator[client.CustomObjectsApi]:
    with kube_cluster.api_client() as api_client:
        yield client.CustomObjectsApi(api_client)


def _apply(api: client.CustomObjectsApi, namespace: str, obj: Obj) -> Obj:
    r: Resource = KINDS[obj["kind"]]
    body = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    name = obj["metadata"]["name"]
    api.patch_namespaced_custom_object(
        r.group, r.version, namespace, r.plural, name, body,
        field_manager="bgserve", field_validation="Strict",
        _content_type="application/apply-patch+yaml",
    )  # fmt: skip
    stored: Obj = api.get_namespaced_custom_object(r.group, r.version, namespace, r.plural, name)
    return stored


def _contains(stored: Any, sent: Any) -> bool:
    """Whether everything sent is stored unchanged (the server may add defaults)."""
    if isinstance(sent, Mapping):
        return isinstance(stored, Mapping) and all(
            k in stored and _contains(stored[k], v) for k, v in sent.items()
        )
    if isinstance(sent, list):
        return (
            isinstance(stored, list)
            and len(stored) == len(sent)
            and all(_contains(a, b) for a, b in zip(stored, sent, strict=True))
        )
    return bool(stored == sent)


@pytest.mark.parametrize("router", ["gateway", "istio"])
def test_every_llm_object_is_stored_as_sent(
    kube_cluster: KubeCluster, api: client.CustomObjectsApi, router: str
) -> None:
    ns = kube_cluster.fresh_namespace()
    settings = Settings(kube_namespace=ns, kserve_router=router)
    objects = [
        *kserve_llm_objects("chat", SPLIT, RELEASES, LLMS, settings.kube),
        *llmisvc_objects("chat", SPLIT, RELEASES, {1: LLMS[1], 2: LLMS[2]}, settings.kube),
        hf_runtime_inference_service(
            "llama-v1", "hf://meta-llama/Llama-3.1-8B", "llama", settings.kube
        ),
    ]
    for obj in objects:
        stored = _apply(api, ns, obj)
        assert _contains(stored["spec"], obj["spec"]), (obj["kind"], stored["spec"])


def test_the_server_evaluates_the_llm_crd_rules(
    kube_cluster: KubeCluster, api: client.CustomObjectsApi
) -> None:
    ns = kube_cluster.fresh_namespace()
    obj = llm_inference_service("chat", RELEASES[1], LLMS[1], 100, Settings(kube_namespace=ns).kube)
    both = copy.deepcopy(obj)
    both["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 2}
    with pytest.raises(client.ApiException) as cel:
        _apply(api, ns, both)
    assert cel.value.status == 422 and "mutually exclusive" in str(cel.value.body)
    heavy = copy.deepcopy(obj)
    heavy["spec"]["router"]["route"]["weight"] = 1_000_001
    with pytest.raises(client.ApiException) as bound:
        _apply(api, ns, heavy)
    assert bound.value.status == 422
    typo = copy.deepcopy(obj)
    typo["spec"]["router"]["route"]["weigth"] = 1
    typo["metadata"]["namespace"] = ns
    r = LLM_INFERENCE_SERVICE
    with pytest.raises(client.ApiException) as unknown:
        api.create_namespaced_custom_object(
            r.group, r.version, ns, r.plural, typo, field_validation="Strict"
        )
    assert unknown.value.status == 400 and "weigth" in str(unknown.value.body)
    assert _apply(api, ns, obj)["spec"]["router"]["route"] == {"group": "chat", "weight": 100}


def test_a_split_moves_member_by_member_and_reverts(
    kube_cluster: KubeCluster, api: client.CustomObjectsApi
) -> None:
    ns = kube_cluster.fresh_namespace()
    settings = Settings(kube_namespace=ns)
    llms = {1: LLMS[1], 2: LLMS[1]}
    r = LLM_INFERENCE_SERVICE

    def stored_weights() -> dict[str, int]:
        items = api.list_namespaced_custom_object(r.group, r.version, ns, r.plural)["items"]
        return {o["metadata"]["name"]: member_weight(o, "chat") for o in items}

    current: dict[str, int] = {}
    splits = [[("blue", 1, 100), ("green", 2, 0)], [("blue", 1, 50), ("green", 2, 50)]]
    splits += [[("blue", 2, 100), ("standby", 1, 0)], [("blue", 1, 100), ("green", 2, 0)]]
    for split in splits:
        routes = [Route(role, release, weight) for role, release, weight in split]
        by_name = {
            o["metadata"]["name"]: o
            for o in llmisvc_objects("chat", routes, RELEASES, llms, settings.kube)
        }
        desired = {llmisvc_name("chat", x.release_id): x.weight for x in routes}
        for x in routes:  # ensure_slot: a new member joins at 0, weights are set_routes' job
            if llmisvc_name("chat", x.release_id) not in current:
                member = llm_inference_service(
                    "chat", RELEASES[x.release_id], LLMS[1], 0, settings.kube
                )
                _apply(api, ns, member)
        for name, _weight in weight_writes(current, desired):
            _apply(api, ns, by_name[name])
            assert sum(stored_weights().values()) > 0
        current = stored_weights()
        assert current == desired
