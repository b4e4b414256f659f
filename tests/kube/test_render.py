"""``render``: the objects the backend would apply, as YAML, without a cluster."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgserve.domain.release import Release
from bgserve.domain.rollout import DeploymentState
from bgserve.errors import InvalidInput
from bgserve.kube.kserve.llm_objects import LlmServing
from bgserve.manifests import render_deployment, render_yaml, write_objects
from bgserve.settings import Settings
from tests.support.crd_schema import Crd, validate_object
from tests.support.kube import RELEASES, promoted, shifting
from tests.support.kube_namespace import KubeNamespace
from tests.support.stored import stored_deployment


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


@pytest.fixture(scope="module")
def registered(mlflow_store: str) -> dict[str, tuple[str, int]]:
    """A classic model and an LLM base model in the session's MLflow store, by kind: each
    one's (name, version)."""
    import mlflow
    from mlflow.pyfunc.model import PythonModel

    from bgserve.compose import registry_at
    from bgserve.registry.llm_models import LlmSpec, register_llm

    class Echo(PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return model_input

    registry = registry_at(mlflow_store, mlflow_store)
    with registry.uris():
        info = mlflow.pyfunc.log_model(
            name="echo", python_model=Echo(), registered_model_name="render-classic"
        )
    llm = register_llm(
        registry, LlmSpec("render-llm", openai_url="http://llm:8080/v1", openai_model="smol")
    )
    assert info.registered_model_version is not None
    return {
        "classic": ("render-classic", int(info.registered_model_version)),
        "llm": ("render-llm", llm.version),
    }


def render_cli(
    tmp_path: Path, mlflow_store: str, model: tuple[str, int], env: dict[str, str], args: list[str]
) -> list[dict[str, Any]]:
    """``bgserve render -d chat`` on a stored deployment of ``model``: the objects printed."""
    from typer.testing import CliRunner

    from bgserve.cli.app import app

    url = stored_deployment(tmp_path, model)
    env = {
        **env,
        "BGSERVE_HOME": str(tmp_path),
        "BGSERVE_MLFLOW_TRACKING_URI": mlflow_store,
        "BGSERVE_KUBE_BUNDLE_STORAGE_URI": "s3://b/{bundle_name}",
    }
    result = CliRunner().invoke(app, ["render", "-d", "chat", "--state-url", url, *args], env=env)
    assert result.exit_code == 0, result.output
    return list(yaml.safe_load_all(result.output))


@pytest.mark.parametrize(
    ("env", "args", "kinds"),
    [
        ({"BGSERVE_BACKEND": "seldon"}, [], ["Model", "Experiment"]),
        ({"BGSERVE_BACKEND": "seldon", "BGSERVE_SELDON_FLAVOUR": "v1"}, [], ["SeldonDeployment"]),
        ({"BGSERVE_BACKEND": "kserve"}, [], ["InferenceService", "HTTPRoute"]),
        ({"BGSERVE_BACKEND": "local"}, [], ["InferenceService", "HTTPRoute"]),
        ({"BGSERVE_BACKEND": "seldon"}, ["--backend", "kserve"], ["InferenceService", "HTTPRoute"]),
    ],
)
def test_render_cli_follows_bgserve_backend_unless_told(
    tmp_path: Path,
    mlflow_store: str,
    registered: dict[str, tuple[str, int]],
    env: dict[str, str],
    args: list[str],
    kinds: list[str],
) -> None:
    objects = render_cli(tmp_path, mlflow_store, registered["classic"], env, args)
    assert [d["kind"] for d in objects] == kinds


@pytest.mark.parametrize(
    ("mode", "kinds"),
    [
        ("inferenceservice", ["InferenceService", "HTTPRoute"]),
        ("llminferenceservice", ["LLMInferenceService"]),
    ],
)
def test_render_cli_renders_an_llm_release_as_the_kserve_backend_applies_it(
    tmp_path: Path,
    mlflow_store: str,
    registered: dict[str, tuple[str, int]],
    crds: Mapping[str, Crd],
    mode: str,
    kinds: list[str],
) -> None:
    env = {"BGSERVE_BACKEND": "kserve", "BGSERVE_KSERVE_LLM_MODE": mode}
    objects = render_cli(tmp_path, mlflow_store, registered["llm"], env, [])
    assert [d["kind"] for d in objects] == kinds
    for obj in objects:
        assert validate_object(crds, obj) == [], obj
    if mode == "inferenceservice":
        service, route = objects
        assert "bgserve.io/llm-kind" in service["metadata"]["annotations"]
        paths = [m["path"]["value"] for r in route["spec"]["rules"] for m in r["matches"]]
        assert paths == ["/v2/models/chat", "/chat/openai/v1"]  # OpenAI beside OIP
    else:
        (member,) = objects
        assert member["spec"]["router"]["route"] == {"group": "chat", "weight": 100}


def llm_everywhere(release: Release) -> LlmServing:
    return LlmServing("openai", served_model_name="smol", openai_url="http://llm:8080/v1")


@pytest.mark.parametrize("state", [shifting(), promoted()], ids=["shifting", "promoted"])
def test_an_llm_deployment_renders_as_weighted_routing_group_members(
    crds: Mapping[str, Crd], state: DeploymentState
) -> None:
    settings = Settings(kserve_llm_mode="llminferenceservice")
    objects = render_deployment(state, RELEASES, settings, "kserve", llm_everywhere)
    for obj in objects:
        assert validate_object(crds, obj) == [], obj
    assert [o["kind"] for o in objects] == ["LLMInferenceService"] * len(state.routes())
    assert [o["spec"]["router"]["route"]["weight"] for o in objects] == [
        r.weight for r in state.routes()
    ]


def test_a_routing_group_refuses_a_classic_release_naming_it() -> None:
    settings = Settings(kserve_llm_mode="llminferenceservice")

    def only_release_1(release: Release) -> LlmServing | None:
        return llm_everywhere(release) if release.id == 1 else None

    with pytest.raises(InvalidInput, match=r"releases \[2\] of chat pin no LLM"):
        render_deployment(shifting(), RELEASES, settings, "kserve", only_release_1)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("backend", "extra"),
    [
        ("kserve", {"kserve_router": "gateway"}),
        ("kserve", {"kserve_router": "istio"}),
        ("seldon", {"seldon_flavour": "v2", "kube_bundle_storage_uri": "s3://b/{bundle_name}"}),
        ("seldon", {"seldon_flavour": "v1"}),
    ],
)
def test_rendered_objects_are_stored_unchanged_by_a_real_api_server(
    kube_ns: KubeNamespace, backend: str, extra: dict[str, str]
) -> None:
    """Applied with strict field validation, every rendered object is accepted and
    stored as rendered: nothing pruned, nothing defaulted into the spec."""
    settings = Settings.model_validate({"kube_namespace": kube_ns.namespace, **extra})
    for obj in render_deployment(shifting(), RELEASES, settings, backend):
        plural = obj["kind"].lower() + "s"
        kube_ns.apply_strict(plural, obj)
        stored = kube_ns.get(plural, obj["metadata"]["name"])
        assert stored is not None
        assert stored["spec"] == obj["spec"], obj["kind"]
        assert stored["metadata"]["labels"] == obj["metadata"]["labels"]
