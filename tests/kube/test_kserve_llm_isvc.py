"""LLMInferenceServices carrying a blue-green split in KServe's routing group, validated
against the official CRD, and the order in which their weights are written."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction

import pytest

from bgserve.domain import rollout
from bgserve.domain.rollout import Route
from bgserve.errors import InvalidInput
from bgserve.kube.client import MANAGED_BY
from bgserve.kube.kserve.llm_isvc import (
    STOP_ANNOTATION,
    llm_inference_service,
    llmisvc_name,
    llmisvc_objects,
    member_weight,
    weight_writes,
)
from bgserve.kube.kserve.llm_objects import LlmServing, SecretKeyRef
from bgserve.settings import Settings
from tests.support.crd_schema import Crd, validate_object
from tests.support.kube import RELEASES

LLMS = {
    1: LlmServing("gguf", "smollm2"),
    2: LlmServing("gguf", "smollm2", weights_uri="hf://HuggingFaceTB/SmolLM2-135M-Instruct"),
    3: LlmServing(
        "openai",
        "llama",
        openai_url="http://llama-v1-predictor.models.svc.cluster.local/openai/v1",
        api_key_env="LLM_API_KEY",
        api_key_secret=SecretKeyRef("llm-endpoint"),
    ),
}
SETTINGS = Settings(kube_namespace="models")


def _transitions() -> Iterator[rollout.Transition]:
    """deploy 1, stage 2, 10, 50, 100 (2 blue, 1 standby), revert, stage 3 after a new deploy."""
    t = rollout.create("chat", 1)
    yield t
    for step in (
        lambda s: rollout.stage_green(s, 2),
        lambda s: rollout.shift(s, 10, force=True),
        lambda s: rollout.shift(s, 50, force=True),
        lambda s: rollout.shift(s, 100, force=True),
        rollout.revert,
    ):
        t = step(t.state)
        yield t


def _route_steps() -> list[Sequence[Route]]:
    return [a.routes for t in _transitions() for a in t.actions if isinstance(a, rollout.SetRoutes)]


def _members(routes: Sequence[Route]) -> dict[str, int]:
    return {llmisvc_name("chat", r.release_id): r.weight for r in routes}


def test_every_step_of_a_rollout_validates_and_declares_its_weights(
    crds: Mapping[str, Crd],
) -> None:
    steps = _route_steps()
    assert len(steps) >= 5
    for routes in steps:
        objects = llmisvc_objects("chat", routes, RELEASES, LLMS, SETTINGS.kube)
        for obj, r in zip(objects, routes, strict=True):
            assert validate_object(crds, obj) == [], obj
            assert member_weight(obj, "chat") == r.weight
            assert obj["spec"]["router"]["route"]["group"] == "chat"


@pytest.mark.parametrize(
    "settings",
    [
        SETTINGS,
        Settings(
            kube_bundle_storage_uri="s3://bundles/{bundle_name}/{bundle_version}",
            kube_slot_service_account="model-reader",
            kube_gateway_namespace="",
        ),
    ],
)
def test_members_follow_kserve_group_rules(crds: Mapping[str, Crd], settings: Settings) -> None:
    routes = [Route("blue", 1, 70), Route("green", 2, 30), Route("standby", 3, 0)]
    objects = llmisvc_objects("chat", routes, RELEASES, LLMS, settings.kube)
    for obj in objects:
        assert validate_object(crds, obj) == [], obj
        spec = obj["spec"]
        # KServe's webhook: group requires weight and weight requires group.
        assert ("group" in spec["router"]["route"]) == ("weight" in spec["router"]["route"])
        # KServe's CEL rule (not evaluated by the validator): replicas xor scaling.
        assert not ("replicas" in spec and "scaling" in spec)
        (main,) = spec["template"]["containers"]
        assert main["name"] == "main"
        assert {p["containerPort"] for p in main["ports"]} == {8000}
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert main[probe]["httpGet"]["port"] == 8000
            assert main[probe]["httpGet"]["scheme"] == "HTTP"
    # KServe routes only among members serving the same model name: all serve the deployment's.
    assert {o["spec"]["model"]["name"] for o in objects} == {"chat"}
    assert [member_weight(o, "chat") for o in objects] == [70, 30, 0]


def test_the_model_uri_is_what_the_slot_loads() -> None:
    registry = llm_inference_service("chat", RELEASES[1], LLMS[1], 100, SETTINGS.kube)
    assert registry["spec"]["model"]["uri"] == RELEASES[1].bundle_uri
    assert registry["spec"]["storageInitializer"] == {"enabled": False}
    weights = llm_inference_service("chat", RELEASES[2], LLMS[2], 0, SETTINGS.kube)
    assert weights["spec"]["model"]["uri"] == LLMS[2].weights_uri
    assert weights["spec"]["storageInitializer"] == {"enabled": True}
    stored = Settings(kube_bundle_storage_uri="gs://b/{release}")
    bundle = llm_inference_service("chat", RELEASES[1], LLMS[1], 100, stored.kube)
    assert bundle["spec"]["model"]["uri"] == "gs://b/chat-v1"
    (main,) = bundle["spec"]["template"]["containers"]
    assert main["args"][main["args"].index("--model-uri") + 1] == "/mnt/models"
    assert all(e["name"] != "STORAGE_URI" for e in main["env"])
    openai = llm_inference_service("chat", RELEASES[3], LLMS[3], 0, SETTINGS.kube)
    (main,) = openai["spec"]["template"]["containers"]
    key = next(e for e in main["env"] if e["name"] == "LLM_API_KEY")
    assert key == {
        "name": "LLM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "llm-endpoint", "key": "api-key"}},
    }


def test_the_validator_refuses_what_kserve_refuses(crds: Mapping[str, Crd]) -> None:
    obj = llm_inference_service("chat", RELEASES[1], LLMS[1], 100, SETTINGS.kube)
    heavy = copy.deepcopy(obj)
    heavy["spec"]["router"]["route"]["weight"] = 1_000_001
    assert validate_object(crds, heavy)
    group = copy.deepcopy(obj)
    group["spec"]["router"]["route"]["group"] = "Chat_Group"
    assert validate_object(crds, group)
    typo = copy.deepcopy(obj)
    typo["spec"]["router"]["route"]["weigth"] = 1
    assert any("weigth: unknown field" in e for e in validate_object(crds, typo))


def test_member_weight_ignores_what_does_not_route_for_bgserve() -> None:
    obj = llm_inference_service("chat", RELEASES[1], LLMS[1], 40, SETTINGS.kube)
    assert member_weight(obj, "chat") == 40
    assert member_weight(obj, "other") == 0
    assert member_weight(None, "chat") == 0
    foreign = copy.deepcopy(obj)
    del foreign["metadata"]["labels"][MANAGED_BY]
    assert member_weight(foreign, "chat") == 0
    stopped = copy.deepcopy(obj)
    stopped["metadata"]["annotations"][STOP_ANNOTATION] = "true"
    assert member_weight(stopped, "chat") == 0


def test_non_llm_and_unknown_releases_are_refused() -> None:
    routes = [Route("blue", 1, 100)]
    with pytest.raises(InvalidInput, match="pin no LLM"):
        llmisvc_objects("chat", routes, RELEASES, {}, SETTINGS.kube)
    with pytest.raises(InvalidInput, match=r"unknown releases \[9\]"):
        llmisvc_objects("chat", [Route("blue", 9, 100)], RELEASES, LLMS, SETTINGS.kube)
    with pytest.raises(InvalidInput, match="summing to 100"):
        llmisvc_objects("chat", [Route("blue", 1, 90)], RELEASES, LLMS, SETTINGS.kube)


def _shares(weights: Mapping[str, int]) -> dict[str, Fraction] | None:
    total = sum(weights.values())
    return None if total == 0 else {n: Fraction(w, total) for n, w in weights.items()}


def _check_transition(current: dict[str, int], desired: dict[str, int]) -> None:
    names = set(current) | set(desired)
    before = {n: current.get(n, 0) for n in names}
    after = {n: desired.get(n, before[n]) for n in names}
    old, new = _shares(before), _shares(after)
    assert old is not None and new is not None
    state = dict(before)
    for name, weight in weight_writes(current, desired):
        state[name] = weight
        shares = _shares(state)
        assert shares is not None, f"all weights 0 after writing {name}={weight}"
        for n in names:
            low, high = sorted((old[n], new[n]))
            assert low <= shares[n] <= high, (current, desired, state)
    assert state == after


def test_weight_writes_through_a_rollout_never_empty_the_group() -> None:
    steps = _route_steps()
    current: dict[str, int] = {}
    for routes in steps:
        desired = _members(routes)
        if current:
            _check_transition(current, desired)
        current = {**current, **desired}


@pytest.mark.parametrize("blue", [0, 1, 10, 50, 90, 99, 100])
def test_weight_writes_between_any_two_splits(blue: int) -> None:
    for green in range(0, 101, 5):
        _check_transition({"b": blue, "g": 100 - blue}, {"b": 100 - green, "g": green})
    # a standby at 0 beside them changes nothing
    _check_transition({"b": blue, "g": 100 - blue, "s": 0}, {"b": 0, "g": 100, "s": 0})


def test_a_revert_takes_traffic_off_green_at_the_first_write() -> None:
    writes = weight_writes({"b": 50, "g": 50}, {"b": 100, "g": 0})
    assert writes[0] == ("g", 0)
    # from a full cutover the old blue must come back before the new one leaves
    writes = weight_writes({"b": 0, "g": 100}, {"b": 100, "g": 0})
    assert writes[0] == ("b", 100)
