"""``render``: the objects the backend would apply, as YAML, without a cluster."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from bgserve.domain.rollout import DeploymentState
from bgserve.errors import InvalidInput
from bgserve.manifests import render_deployment, render_yaml, write_objects
from bgserve.settings import Settings
from tests.crd_schema import Crd, validate_object
from tests.kube_helpers import RELEASES, promoted, shifting


def route_weights(obj: dict[str, object]) -> list[int]:
    spec = obj["spec"]
    assert isinstance(spec, dict)
    if obj["kind"] == "HTTPRoute":
        return [r["weight"] for r in spec["rules"][0]["backendRefs"]]
    return [d["weight"] for d in spec["http"][0]["route"]]


@pytest.mark.parametrize("router", ["gateway", "istio"])
@pytest.mark.parametrize("state", [shifting(), promoted()], ids=["shifting", "promoted"])
def test_render_output_validates_and_matches_the_deployment(
    crds: Mapping[str, Crd], router: str, state: DeploymentState
) -> None:
    settings = Settings(kserve_router=router)
    text = render_yaml(render_deployment(state, RELEASES, settings, "kserve"))
    docs = list(yaml.safe_load_all(text))
    for doc in docs:
        assert validate_object(crds, doc) == [], doc
    *services, route = docs
    assert [s["metadata"]["labels"]["bgserve.io/release"] for s in services] == [
        str(r.release_id) for r in state.routes()
    ]
    weights = route_weights(route)
    assert sum(weights) == 100
    assert weights == [r.weight for r in state.routes()]


def test_write_objects_writes_one_file_per_object(tmp_path: Path) -> None:
    objects = render_deployment(shifting(), RELEASES, Settings(), "kserve")
    paths = write_objects(objects, tmp_path / "out")
    assert [p.name for p in paths] == [
        "inferenceservice-chat-r1.yaml",
        "inferenceservice-chat-r2.yaml",
        "httproute-bgserve-chat.yaml",
    ]
    assert [yaml.safe_load(p.read_text()) for p in paths] == objects
    assert write_objects(objects, tmp_path / "out") == paths


def test_render_needs_a_kubernetes_backend() -> None:
    with pytest.raises(InvalidInput, match="local"):
        render_deployment(shifting(), RELEASES, Settings(), "local")


def test_render_needs_every_routed_release() -> None:
    with pytest.raises(InvalidInput, match="unknown releases"):
        render_deployment(shifting(), {1: RELEASES[1]}, Settings(), "kserve")
