"""The KServe backend in LLMInferenceService mode (``BGSERVE_KSERVE_LLM_MODE=
llminferenceservice``) on a real kube-apiserver with the official CRDs, bgserve holding
only its declared Role, and a thread playing KServe's LLMInferenceService controller:
releases stage as members of the deployment's routing group, the split moves member by
member, reverts, and retires, and no route of bgserve's is written."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bgserve.domain import rollout
from bgserve.domain.release import Release
from bgserve.domain.rollout import DeploymentState
from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.kube.client import MANAGER
from bgserve.kube.kserve.backend import KServeBackend, required_rbac
from bgserve.kube.kserve.llm_group import WEIGHT_MANAGER
from bgserve.kube.kserve.llm_isvc import LLM_INFERENCE_SERVICE, llmisvc_name, member_weight
from bgserve.kube.kserve.llm_objects import LlmServing
from tests.kube.test_kserve_backend import fake_kserve
from tests.support.kube import RELEASES, kserve_backend, perform, wait_until
from tests.support.kube_llmisvc import PLURAL, FakeLlmController, group_view
from tests.support.kube_namespace import KubeNamespace

pytestmark = pytest.mark.integration

GGUF = LlmServing("gguf", "smollm2", weights_uri="s3://weights/smollm2.Q4_1.gguf")
MODE = "llminferenceservice"


def group_backend(
    ns: KubeNamespace,
    llm_releases: frozenset[int] = frozenset({1, 2, 3}),
    wrap: Callable[[client.ApiClient], client.ApiClient] = lambda api: api,
    **extra: Any,
) -> KServeBackend:
    """The backend in LLMInferenceService mode as user bgserve with its declared Role;
    ``llm_releases`` pin an LLM, the others a classic model; ``wrap`` may stand between
    bgserve and the API server."""

    def llms(release: Release) -> LlmServing | None:
        return GGUF if release.id in llm_releases else None

    values = {"slot_ready_timeout_seconds": 10, "kserve_llm_mode": MODE, **extra}
    settings = ns.settings(required_rbac("gateway", MODE), **values)
    return kserve_backend(settings, api=wrap(ns.api_for(settings)), llms=llms)


@pytest.fixture
def backend(kube_ns: KubeNamespace) -> Iterator[KServeBackend]:
    b = group_backend(kube_ns)
    yield b
    b.close()


def stored_weights(ns: KubeNamespace) -> dict[str, int]:
    return {o["metadata"]["name"]: member_weight(o, "chat") for o in ns.objects(PLURAL)}


def expected(state: DeploymentState) -> dict[str, int]:
    return {llmisvc_name("chat", r.release_id): r.weight for r in state.routes()}


def weight_writes(ns: KubeNamespace) -> list[tuple[str, int]]:
    """Every weight bgserve wrote, in order, from the requests the server accepted (one
    that lost a conflict to KServe's status write is sent again on a fresh read)."""
    return [
        (r.name, r.body["spec"]["router"]["route"]["weight"])
        for r in ns.requests
        if r.verb == "patch" and r.resource == PLURAL and r.status == 200 and r.body is not None
        if "model" not in r.body.get("spec", {})
    ]


def cycle(backend: KServeBackend, ns: KubeNamespace) -> list[DeploymentState]:
    """create -> stage -> 10 -> 50 -> 100 -> revert, the states after each step."""
    state = perform(backend, rollout.create("chat", 1))
    states = [state]
    for step in (
        lambda s: rollout.stage_green(s, 2),
        lambda s: rollout.shift(s, 10, force=True),
        lambda s: rollout.shift(s, 50, force=True),
        lambda s: rollout.shift(s, 100, force=True),
        rollout.revert,
    ):
        state = perform(backend, step(state))
        assert stored_weights(ns) == expected(state)
        states.append(state)
    return states


def test_a_rollout_moves_the_groups_weights_and_reverts(
    kube_ns: KubeNamespace, backend: KServeBackend
) -> None:
    with FakeLlmController(kube_ns) as kserve:
        states = cycle(backend, kube_ns)
        final = expected(states[-1])
        # KServe's controller carries the split: every member reports the same group view.
        wait_until(
            lambda: all(group_view(o) == final for o in kube_ns.objects(PLURAL)),
            "the group's split in every member's status",
        )
    assert kserve.errors == []
    assert (states[-1].blue, states[-1].green, states[-1].green_weight) == (1, 2, 0)
    assert final == {"chat-r1": 100, "chat-r2": 0}
    # Member by member, the group never had all its weight at 0.
    weights = {"chat-r1": 0}
    for name, weight in weight_writes(kube_ns):
        weights[name] = weight
        assert sum(weights.values()) > 0, weight_writes(kube_ns)
    assert weights == final
    # KServe writes the routes of a group: bgserve wrote none, and applied members whole
    # as bgserve, weights alone as bgserve-weights.
    assert not any(r.resource in ("httproutes", "virtualservices") for r in kube_ns.requests)
    member = kube_ns.get(PLURAL, "chat-r2")
    assert member is not None
    owners = {m["manager"] for m in member["metadata"]["managedFields"]}
    assert {MANAGER, WEIGHT_MANAGER} <= owners
    model = member["spec"]["model"]
    assert (model["uri"], model["name"]) == (GGUF.weights_uri, "chat")
    assert member["spec"]["router"]["route"] == {"group": "chat", "weight": 0}


def test_each_slot_is_its_member_with_its_own_address(
    kube_ns: KubeNamespace, backend: KServeBackend
) -> None:
    with FakeLlmController(kube_ns):
        slot = backend.ensure_slot("chat", RELEASES[1])
        again = backend.ensure_slot("chat", RELEASES[1])
        backend.set_routes("chat", [rollout.Route("blue", 1, 100)])
        writes = len([r for r in kube_ns.requests if r.verb in ("create", "patch")])
        # Ensured again once it takes traffic: nothing written, the weight kept.
        backend.ensure_slot("chat", RELEASES[1])
        assert len([r for r in kube_ns.requests if r.verb in ("create", "patch")]) == writes
    service = "chat-r1-kserve-workload-svc"
    assert slot == again
    assert (
        slot.ready
        and slot.endpoint == f"http://{service}.{kube_ns.namespace}.svc.cluster.local:8000"
    )
    assert backend.slot_info("chat", 1) == slot
    assert backend.slot_info("chat", 9) is None
    assert stored_weights(kube_ns) == {"chat-r1": 100}


def test_a_grouped_deployments_entry_point_is_the_gateways_openai_chat_url(
    kube_ns: KubeNamespace,
) -> None:
    backend = group_backend(kube_ns, kube_data_plane_url="http://gateway.example/")
    try:
        # No member yet: the deployment may still be a classic one, on bgserve's route.
        assert backend.data_plane_url("chat") == "http://gateway.example/v2/models/chat/infer"
        with FakeLlmController(kube_ns):
            backend.ensure_slot("chat", RELEASES[1])
        # A routing group has no OIP route: clients send model "chat" to KServe's gateway.
        assert backend.data_plane_url("chat") == "http://gateway.example/v1/chat/completions"
        assert backend.data_plane_url("other") == "http://gateway.example/v2/models/other/infer"
    finally:
        backend.close()


def test_a_new_slot_image_rewrites_the_member_without_moving_its_weight(
    kube_ns: KubeNamespace, backend: KServeBackend
) -> None:
    with FakeLlmController(kube_ns):
        state = perform(backend, rollout.create("chat", 1))
        state = perform(backend, rollout.stage_green(state, 2))
        state = perform(backend, rollout.shift(state, 30, force=True))
        upgraded = group_backend(kube_ns, kube_slot_image="bgserve:0.2.0")
        slot = upgraded.ensure_slot("chat", RELEASES[2])
    member = kube_ns.get(PLURAL, "chat-r2")
    assert member is not None and member["metadata"]["generation"] > 1 and slot.ready
    (main,) = member["spec"]["template"]["containers"]
    assert main["image"] == "bgserve:0.2.0"
    assert stored_weights(kube_ns) == expected(state) == {"chat-r1": 70, "chat-r2": 30}
    upgraded.close()


def test_retire_refuses_a_weighted_member_and_deletes_a_standby(
    kube_ns: KubeNamespace, backend: KServeBackend
) -> None:
    with FakeLlmController(kube_ns) as kserve:
        state = perform(backend, rollout.create("chat", 1))
        state = perform(backend, rollout.stage_green(state, 2))
        state = perform(backend, rollout.shift(state, 100, force=True))  # 1 is standby at 0
        with pytest.raises(BackendError, match="still takes 100%"):
            backend.retire_slot("chat", 2)
        assert stored_weights(kube_ns) == {"chat-r1": 0, "chat-r2": 100}
        perform(backend, rollout.stage_green(state, 3))  # retires the standby
        assert stored_weights(kube_ns) == {"chat-r2": 100, "chat-r3": 0}
        wait_until(
            lambda: all(
                set(group_view(o)) == {"chat-r2", "chat-r3"} for o in kube_ns.objects(PLURAL)
            ),
            "the retired member out of the group's view",
        )
        backend.retire_slot("chat", 1)  # idempotent
    assert kserve.errors == []


def test_an_unready_member_gets_no_traffic_and_a_revert_needs_none(
    kube_ns: KubeNamespace,
) -> None:
    backend = group_backend(kube_ns, slot_ready_timeout_seconds=3)
    with FakeLlmController(kube_ns) as kserve:
        state = perform(backend, rollout.create("chat", 1))
        state = perform(backend, rollout.stage_green(state, 2))
        state = perform(backend, rollout.shift(state, 10, force=True))
        kserve.take_down("chat-r2")
        with pytest.raises(ReadinessTimeout):
            backend.ensure_slot("chat", RELEASES[2])
        assert kube_ns.get(PLURAL, "chat-r2") is not None  # not created by that call: kept
        with pytest.raises(BackendError, match="chat-r2 is not ready"):
            backend.set_routes("chat", rollout.shift(state, 50, force=True).state.routes())
        assert stored_weights(kube_ns) == {"chat-r1": 90, "chat-r2": 10}
        reverted = perform(backend, rollout.revert(state))
    assert stored_weights(kube_ns) == expected(reverted) == {"chat-r1": 100, "chat-r2": 0}
    backend.close()


def test_a_member_kserve_cannot_configure_fails_fast_and_is_removed(
    kube_ns: KubeNamespace, backend: KServeBackend
) -> None:
    with FakeLlmController(kube_ns) as kserve:
        perform(backend, rollout.create("chat", 1))
        kserve.refuse_config("chat-r3")
        with pytest.raises(BackendError, match="InvalidRenderedConfig") as failed:
            backend.ensure_slot("chat", RELEASES[3])
    assert "did not become ready" not in failed.value.message  # not a timeout
    assert set(stored_weights(kube_ns)) == {"chat-r1"}


def test_llm_and_classic_releases_do_not_share_a_deployment(kube_ns: KubeNamespace) -> None:
    backend = group_backend(kube_ns, llm_releases=frozenset({2}))
    with fake_kserve(kube_ns), FakeLlmController(kube_ns):
        state = perform(backend, rollout.create("chat", 1))  # classic: an InferenceService
        with pytest.raises(BackendError, match="already runs InferenceService chat-r1"):
            perform(backend, rollout.stage_green(state, 2))
        assert list(kube_ns.objects(PLURAL)) == []
        perform(backend, rollout.create("llm", 2))  # an LLM: a member of group "llm"
        with pytest.raises(BackendError, match="already runs LLMInferenceService llm-r2"):
            backend.ensure_slot("llm", RELEASES[1])
    assert {o["metadata"]["name"] for o in kube_ns.objects("inferenceservices")} == {"chat-r1"}
    backend.close()


def test_a_failed_weight_write_puts_the_earlier_ones_back(kube_ns: KubeNamespace) -> None:
    failing = {"left": 0}

    def flaky(api: client.ApiClient) -> client.ApiClient:
        """Fails the weight write that brings ``failing['left']`` to 0 with a 500."""
        send: Callable[..., Any] = api.request

        def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            spec = (kwargs.get("body") or {}).get("spec", {}) if method == "PATCH" else {}
            if "router" in spec and "model" not in spec and failing["left"]:
                failing["left"] -= 1
                if failing["left"] == 0:
                    unavailable = ApiException(status=500, reason="Internal Server Error")
                    unavailable.body = b'{"message": "etcd unavailable"}'
                    raise unavailable
            return send(method, url, *args, **kwargs)

        api.request = request
        return api

    backend = group_backend(kube_ns, wrap=flaky)
    with FakeLlmController(kube_ns):
        state = perform(backend, rollout.create("chat", 1))
        state = perform(backend, rollout.stage_green(state, 2))
        state = perform(backend, rollout.shift(state, 50, force=True))
        failing["left"] = 2  # of 1 -> 10 then 2 -> 90, the second fails
        with pytest.raises(BackendError, match="HTTP 500"):
            backend.set_routes("chat", rollout.shift(state, 90, force=True).state.routes())
    assert stored_weights(kube_ns) == {"chat-r1": 50, "chat-r2": 50}
    assert weight_writes(kube_ns)[-2:] == [("chat-r1", 10), ("chat-r1", 50)]
    backend.close()


def test_the_role_is_exactly_what_the_mode_uses(
    kube_ns: KubeNamespace, backend: KServeBackend
) -> None:
    with FakeLlmController(kube_ns):
        perform(backend, rollout.stage_green(cycle(backend, kube_ns)[-1], 3))  # retires 2
    used = {(r.group, r.resource, r.verb) for r in kube_ns.requests}
    group = LLM_INFERENCE_SERVICE.group
    verbs = {"create", "get", "list", "patch", "watch", "delete"}
    assert {(group, PLURAL, v) for v in verbs} <= used
    declared = {
        (g, res, v)
        for rule in required_rbac("gateway", MODE)
        for g in rule["apiGroups"]
        for res in rule["resources"]
        for v in rule["verbs"]
    }
    assert used <= declared
    assert json.dumps(required_rbac("gateway")).count(PLURAL) == 0
