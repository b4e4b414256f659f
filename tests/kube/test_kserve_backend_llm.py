"""The KServe backend renders an LLM release's slot with its base model and gives a
deployment with an LLM slot KServe's OpenAI routes, on a real kube-apiserver (official
CRDs, bgserve holding only its declared Role)."""

from __future__ import annotations

from typing import Any

import pytest

from bgserve.domain import rollout
from bgserve.domain.release import Release
from bgserve.kube.kserve.backend import LLM_KIND_ANNOTATION, KServeBackend, required_rbac
from bgserve.kube.kserve.llm_objects import LlmServing, openai_path
from bgserve.kube.kserve.objects import isvc_name
from tests.kube.test_kserve_backend import fake_kserve
from tests.support.kube import KSERVE, RELEASES, kserve_backend, perform
from tests.support.kube_namespace import KubeNamespace

pytestmark = pytest.mark.integration

ENDPOINT = LlmServing("openai", served_model_name="smollm2", openai_url="http://llm:8080/v1")
ROUTE = ("gateway.networking.k8s.io", "httproutes")


def backend_with(ns: KubeNamespace, llm_releases: set[int]) -> KServeBackend:
    def llms(release: Release) -> LlmServing | None:
        return ENDPOINT if release.id in llm_releases else None

    settings = ns.settings(required_rbac("gateway"), slot_ready_timeout_seconds=10)
    return kserve_backend(settings, api=ns.api_for(settings), llms=llms)


def stored(ns: KubeNamespace, name: str) -> dict[str, Any]:
    (obj,) = [o for o in ns.objects(KSERVE[1]) if o["metadata"]["name"] == name]
    return obj


def path_prefixes(ns: KubeNamespace) -> list[str]:
    (route,) = ns.objects(ROUTE[1])
    return [rule["matches"][0]["path"]["value"] for rule in route["spec"]["rules"]]


def test_an_llm_release_gets_its_base_model_and_the_openai_routes(kube_ns: KubeNamespace) -> None:
    backend = backend_with(kube_ns, llm_releases={2})
    with fake_kserve(kube_ns):
        state = perform(backend, rollout.create("chat", 1))
        assert openai_path("chat") not in path_prefixes(kube_ns)
        state = perform(backend, rollout.stage_green(state, 2))
        perform(backend, rollout.shift(state, 50, force=True))
    llm = stored(kube_ns, isvc_name("chat", RELEASES[2].id))
    classic = stored(kube_ns, isvc_name("chat", RELEASES[1].id))
    assert llm["metadata"]["annotations"][LLM_KIND_ANNOTATION] == "openai"
    assert LLM_KIND_ANNOTATION not in classic["metadata"].get("annotations", {})
    assert openai_path("chat") in path_prefixes(kube_ns)
    backend.close()


def test_without_an_llm_lookup_every_release_renders_as_before(kube_ns: KubeNamespace) -> None:
    backend = backend_with(kube_ns, llm_releases=set())
    with fake_kserve(kube_ns):
        perform(backend, rollout.create("chat", 2))
    assert LLM_KIND_ANNOTATION not in stored(kube_ns, "chat-r2")["metadata"].get("annotations", {})
    assert openai_path("chat") not in path_prefixes(kube_ns)
    backend.close()
