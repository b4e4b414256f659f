"""The pure KServe object builders, validated strictly against the official CRDs."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from bgserve.compose.backends import slot_mlflow
from bgserve.domain.release import DNS1123_LABEL
from bgserve.domain.rollout import Route
from bgserve.errors import InvalidInput
from bgserve.kube.client import DEPLOYMENT_LABEL, MANAGED_BY, RELEASE_LABEL, dns_label
from bgserve.kube.kserve.objects import (
    ISVC_NAME_MAX,
    inference_service,
    isvc_name,
    kserve_objects,
    weighted_route,
)
from bgserve.settings import Settings
from tests.support.crd_schema import Crd, validate_object
from tests.support.kube import RELEASES

SPLIT = [Route("blue", 1, 90), Route("green", 2, 10)]
VARIANTS: list[dict[str, Any]] = [
    {},
    {"kserve_router": "istio"},
    {
        "kube_bundle_storage_uri": "s3://mlflow/{bundle_name}/{bundle_version}",
        "kube_route_hostname": "{deployment}.{namespace}.models.example.com",
        "kube_slot_service_account": "model-reader",
        "kserve_deployment_mode": "Standard",
        "kube_gateway_namespace": "",
    },
    {"kserve_router": "istio", "kube_route_hostname": "chat.example.com"},
    {"kube_slot_token_secret": "slot-token", "kube_slot_token": "t0ken"},
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_validates_strictly(crds: Mapping[str, Crd], variant: dict[str, Any]) -> None:
    settings = Settings(kube_namespace="models", **variant)
    objects = kserve_objects("chat", SPLIT, RELEASES, settings.kube)
    assert [o["kind"] for o in objects][:2] == ["InferenceService", "InferenceService"]
    for obj in objects:
        assert validate_object(crds, obj) == [], obj


def test_the_validator_is_strict(crds: Mapping[str, Crd]) -> None:
    isvc = inference_service("chat", RELEASES[1], Settings().kube)
    snake = copy.deepcopy(isvc)
    snake["spec"]["predictor"]["min_replicas"] = snake["spec"]["predictor"].pop("minReplicas")
    assert any("min_replicas: unknown field" in e for e in validate_object(crds, snake))
    big = copy.deepcopy(isvc)
    big["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = 2**40
    assert any("int32" in e for e in validate_object(crds, big))
    route = weighted_route("chat", SPLIT, Settings().kube)
    header = {"name": "x-team", "value": "a"}
    route["spec"]["rules"][0]["matches"][0]["headers"] = [header, dict(header)]
    assert any("duplicate keys" in e for e in validate_object(crds, route))
    bad_name = copy.deepcopy(isvc)
    bad_name["metadata"]["name"] = "Chat_R1"
    assert any("metadata.name" in e for e in validate_object(crds, bad_name))


def test_inference_service_labels_annotations_and_slot_command() -> None:
    isvc = inference_service("chat", RELEASES[2], Settings(kube_namespace="models").kube)
    meta = isvc["metadata"]
    assert meta["name"] == "chat-r2" and meta["namespace"] == "models"
    assert meta["labels"] == {MANAGED_BY: "bgserve", DEPLOYMENT_LABEL: "chat", RELEASE_LABEL: "2"}
    assert meta["annotations"] == {
        "bgserve.io/model-uri": "models:/llm/2",
        "bgserve.io/prompt-uri": "prompts:/greeting/2",
        "bgserve.io/bundle-uri": "models:/bgserve.chat/2",
    }
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["command"] == ["bgserve"]
    assert container["args"][:3] == ["slot", "--model-uri", "models:/bgserve.chat/2"]
    assert "--deployment" in container["args"] and "--release-id" in container["args"]


def test_storage_uri_mounts_the_bundle_for_the_slot() -> None:
    settings = Settings(kube_bundle_storage_uri="gs://bundles/{release}/{bundle_version}")
    (container,) = inference_service("chat", RELEASES[1], settings.kube)["spec"]["predictor"][
        "containers"
    ]
    assert container["env"] == [{"name": "STORAGE_URI", "value": "gs://bundles/chat-v1/1"}]
    assert container["args"][2] == "/mnt/models"


def test_without_storage_uri_the_slot_reads_the_registry() -> None:
    # explicit None: the session's MLflow fixture sets MLFLOW_REGISTRY_URI in the environment
    settings = Settings(mlflow_tracking_uri="http://mlflow.mlops:5000", mlflow_registry_uri=None)
    mlflow = slot_mlflow(settings)
    (container,) = inference_service("chat", RELEASES[1], settings.kube, mlflow)["spec"][
        "predictor"
    ]["containers"]
    assert container["env"] == [
        {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.mlops:5000"}
    ]


def test_with_a_drain_token_the_slot_records_and_reads_the_token_from_its_secret() -> None:
    settings = Settings(kube_slot_token_secret="slot-token", kube_slot_token="t0ken")
    isvc = inference_service("chat", RELEASES[1], settings.kube)
    (container,) = isvc["spec"]["predictor"]["containers"]
    at = container["args"].index("--exchange-records")
    assert int(container["args"][at + 1]) > 0
    secret_ref = {"secretKeyRef": {"name": "slot-token", "key": "token"}}
    assert {"name": "BGSERVE_SLOT_TOKEN", "valueFrom": secret_ref} in container["env"]
    assert "t0ken" not in str(isvc)  # the token itself is never written into the object
    plain = inference_service("chat", RELEASES[1], Settings().kube)
    assert "--exchange-records" not in plain["spec"]["predictor"]["containers"][0]["args"]


@pytest.mark.parametrize("deployment", ["chat", "7up", "a" * 63, "a" * 60 + "-xy"])
def test_inference_service_names_fit_kserve(deployment: str) -> None:
    name = isvc_name(deployment, 123456)
    assert len(name) <= ISVC_NAME_MAX and DNS1123_LABEL.match(name) and name[0].isalpha()


def test_long_names_stay_distinct() -> None:
    assert isvc_name("a" * 60 + "x", 1) != isvc_name("a" * 60 + "y", 1)
    assert dns_label("short", "-r1", 45) == "short-r1"


def test_route_weights_match_and_sum_to_100() -> None:
    route = weighted_route("chat", SPLIT, Settings().kube)
    refs = route["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"]) for r in refs] == [
        ("chat-r1-predictor", 90),
        ("chat-r2-predictor", 10),
    ]
    istio = weighted_route("chat", SPLIT, Settings(kserve_router="istio", kube_namespace="ml").kube)
    dests = istio["spec"]["http"][0]["route"]
    assert [d["weight"] for d in dests] == [90, 10]
    assert dests[0]["destination"]["host"] == "chat-r1-predictor.ml.svc.cluster.local"
    assert istio["spec"]["gateways"] == ["kserve/kserve-ingress-gateway"]


def test_the_gateway_route_puts_no_filter_on_a_backend() -> None:
    # A filter on a backendRef makes Envoy Gateway give each backend a cluster of its own,
    # removed in the update that sets its weight to 0: requests picked before the route
    # update then get a 500 (cluster_not_found). The slot names its release instead.
    for split in (SPLIT, [Route("blue", 2, 100), Route("standby", 1, 0)]):
        route = weighted_route("chat", split, Settings().kube)
        for rule in route["spec"]["rules"]:
            assert all("filters" not in ref for ref in rule["backendRefs"]), rule


@pytest.mark.parametrize(
    "routes",
    [[Route("blue", 1, 90)], [Route("blue", 1, 50), Route("green", 1, 50)], []],
)
def test_bad_weights_are_refused(routes: list[Route]) -> None:
    with pytest.raises(InvalidInput):
        weighted_route("chat", routes, Settings().kube)


def test_unknown_release_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"unknown releases \[9\]"):
        kserve_objects("chat", [Route("blue", 9, 100)], RELEASES, Settings().kube)
