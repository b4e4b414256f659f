"""Seldon objects and ``render --backend seldon``: strict CRD validation, names, weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiextensionsV1Api
from kubernetes.client.exceptions import ApiException

from bgserve.domain import rollout
from bgserve.domain.rollout import DeploymentState
from bgserve.errors import InvalidInput
from bgserve.kube.seldon.objects import experiment, model, seldon_objects
from bgserve.manifests import render_deployment, render_yaml, write_objects
from bgserve.settings import Settings
from tests.support.crd_schema import Crd, require_crd_dir, validate_object
from tests.support.kube import RELEASES, promoted, shifting
from tests.support.kube_fake_apiserver import FakeApiServer
from tests.support.kube_real_apiserver import KubeCluster

STORAGE = "s3://bundles/{bundle_name}/{bundle_version}"


def settings(flavour: str, **extra: object) -> Settings:
    return Settings.model_validate(
        {"seldon_flavour": flavour, "kube_bundle_storage_uri": STORAGE, **extra}
    )


def weights(objects: list[dict[str, object]], flavour: str) -> list[int]:
    last = objects[-1]["spec"]
    assert isinstance(last, dict)
    if flavour == "v2":
        return [c["weight"] for c in last["candidates"]]
    return [p["traffic"] for p in last["predictors"]]


@pytest.mark.parametrize("flavour", ["v2", "v1"])
@pytest.mark.parametrize("state", [shifting(), promoted()], ids=["shifting", "promoted"])
def test_render_validates_and_matches_the_deployment(
    crds: Mapping[str, Crd], flavour: str, state: DeploymentState
) -> None:
    text = render_yaml(render_deployment(state, RELEASES, settings(flavour), "seldon"))
    docs = list(yaml.safe_load_all(text))
    for doc in docs:
        assert validate_object(crds, doc) == [], doc
    assert sum(weights(docs, flavour)) == 100
    assert weights(docs, flavour) == [r.weight for r in state.routes()]


def test_v2_objects_carry_storage_requirements_and_names() -> None:
    s = settings("v2", seldon_server="bgserve-server").kube
    obj = model("chat", RELEASES[2], s)
    assert obj["metadata"]["name"] == "chat-r2"
    assert obj["spec"]["storageUri"] == "s3://bundles/bgserve.chat/2"
    assert obj["spec"]["requirements"] == ["bgserve"] and obj["spec"]["server"] == "bgserve-server"
    exp = experiment("chat", shifting().routes(), s)
    assert exp["metadata"]["name"] == "chat" and "default" not in exp["spec"]


def test_v2_needs_a_bundle_storage_uri() -> None:
    with pytest.raises(InvalidInput, match="BGSERVE_KUBE_BUNDLE_STORAGE_URI"):
        model("chat", RELEASES[1], Settings(seldon_flavour="v2").kube)


def test_v1_predictors_are_named_after_releases_and_run_the_slot() -> None:
    (sdep,) = seldon_objects("chat", promoted().routes(), RELEASES, settings("v1").kube)
    preds = sdep["spec"]["predictors"]
    assert [p["name"] for p in preds] == ["r2", "r1"] and sdep["spec"]["protocol"] == "v2"
    container = preds[0]["componentSpecs"][0]["spec"]["containers"][0]
    assert container["name"] == preds[0]["graph"]["name"] == "slot"
    assert "--port" in container["args"] and "9000" in container["args"]
    assert preds[0]["graph"]["modelUri"] == "s3://bundles/bgserve.chat/2"


def test_write_objects_one_file_per_object(tmp_path: Path) -> None:
    objects = render_deployment(shifting(), RELEASES, settings("v2"), "seldon")
    paths = write_objects(objects, tmp_path)
    assert [p.name for p in paths] == [
        "model-chat-r1.yaml",
        "model-chat-r2.yaml",
        "experiment-chat.yaml",
    ]


def test_bad_weights_are_refused() -> None:
    with pytest.raises(InvalidInput):
        experiment("chat", [rollout.Route("blue", 1, 90)], settings("v2").kube)


def sdep_crd_as_generated() -> dict[str, Any]:
    """The SeldonDeployment CRD as controller-gen writes it: ``items: {}`` under
    ``graph.children`` (the copy in the CRD directory has it fixed)."""
    path = next(require_crd_dir().rglob("machinelearning.seldon.io_seldondeployments*.yaml"))
    doc: dict[str, Any] = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
    for version in doc["spec"]["versions"]:
        predictors = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
            "predictors"
        ]
        predictors["items"]["properties"]["graph"]["properties"]["children"]["items"] = {}
    return doc


@pytest.mark.integration
def test_the_fake_api_server_refuses_a_crd_the_real_one_refuses(
    crds: Mapping[str, Crd], kube_cluster: KubeCluster
) -> None:
    doc = sdep_crd_as_generated()
    doc["metadata"]["name"] = "seldondeployments.generated.example.com"
    doc["spec"]["group"] = "generated.example.com"
    with kube_cluster.api_client() as api, pytest.raises(ApiException) as real:
        ApiextensionsV1Api(api).create_custom_resource_definition(doc)
    assert real.value.status == 422 and "must not be empty" in str(real.value.body)
    spec = doc["spec"]
    broken = Crd(
        group=spec["group"],
        kind=spec["names"]["kind"],
        plural=spec["names"]["plural"],
        namespaced=True,
        schemas={v["name"]: v["schema"]["openAPIV3Schema"] for v in spec["versions"]},
        status_subresource={v["name"]: True for v in spec["versions"]},
    )
    with pytest.raises(ValueError, match="items"):
        FakeApiServer({**crds, "broken": broken})
    with FakeApiServer(crds) as served:  # the fixed CRDs are served
        assert served.url.startswith("http://127.0.0.1:")
