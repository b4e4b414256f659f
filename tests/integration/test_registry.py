"""MlflowRegistry against a real MLflow SQLite store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, DataType, Schema

from bgserve.demo.models import demo_templates, push_demo_prompts, register_demo_models
from bgserve.demo.text_model import summarize
from bgserve.domain.release import RegistryRef, ResolvedRelease
from bgserve.errors import InvalidInput, NotFound, RegistryUnavailable
from bgserve.evaluation.template import render
from bgserve.registry.mlflow_registry import MlflowRegistry, mlflow_uris

pytestmark = pytest.mark.integration

ECHO_CODE = """
import mlflow
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def predict(self, context, model_input, params=None):
        return [f"<{value}>" for value in model_input["question"]]


mlflow.models.set_model(Echo())
"""


@dataclass(frozen=True)
class Demo:
    registry: MlflowRegistry
    model_versions: tuple[int, int]
    prompt_versions: tuple[int, int]


@pytest.fixture(scope="module")
def demo(mlflow_store: str, tmp_path_factory: pytest.TempPathFactory) -> Demo:
    artifacts = str(tmp_path_factory.mktemp("registry-artifacts"))
    registry = MlflowRegistry(mlflow_store, mlflow_store, artifact_location=artifacts)
    models = register_demo_models(mlflow_store, artifact_location=artifacts)
    prompts = push_demo_prompts(mlflow_store)
    return Demo(registry, models, prompts)


@pytest.fixture(scope="module")
def echo_model(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A base model whose single input column is ``question``; answers ``<prompt>``."""
    code = tmp_path_factory.mktemp("echo") / "echo_model.py"
    code.write_text(ECHO_CODE)
    signature = ModelSignature(
        inputs=Schema([ColSpec(DataType.string, "question")]),
        outputs=Schema([ColSpec(DataType.string)]),
    )
    experiment = demo.registry.client.create_experiment(
        "registry-echo", artifact_location=demo.registry.artifact_location
    )
    with demo.registry.uris(), mlflow.start_run(experiment_id=experiment):
        mlflow.pyfunc.log_model(
            name="echo",
            python_model=str(code),
            signature=signature,
            pip_requirements=["mlflow"],
            registered_model_name="echo",
        )
    return "models:/echo/1"


def models(name: str, version: int | None = None, alias: str | None = None) -> RegistryRef:
    return RegistryRef("models", name, version=version, alias=alias)


def prompts(name: str, version: int | None = None, alias: str | None = None) -> RegistryRef:
    return RegistryRef("prompts", name, version=version, alias=alias)


# --- resolving ---------------------------------------------------------------


def test_resolves_model_versions_and_aliases(demo: Demo) -> None:
    registry = demo.registry
    registry.client.set_registered_model_alias("summarizer", "champion", "2")
    assert registry.resolve_model(models("summarizer", 1)) == 1
    assert registry.resolve_model(models("summarizer", alias="champion")) == 2
    assert registry.resolve_model(models("summarizer", alias="latest")) == 2


def test_resolves_prompt_versions_and_aliases(demo: Demo) -> None:
    registry = demo.registry
    registry.client.set_prompt_alias("summarize", "approved", 1)
    assert registry.resolve_prompt(prompts("summarize", 2)) == 2
    assert registry.resolve_prompt(prompts("summarize", alias="approved")) == 1
    assert registry.resolve_prompt(prompts("summarize", alias="latest")) == 2


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (models("nosuch", 1), "model 'nosuch' does not exist"),
        (models("summarizer", 7), "model 'summarizer' has no version 7"),
        (models("summarizer", alias="live"), "model 'summarizer' has no alias 'live'"),
        (models("summarize", 1), "model 'summarize' does not exist: 'summarize' is a prompt"),
        (prompts("nosuch", 1), "prompt 'nosuch' does not exist"),
        (prompts("summarize", 9), "prompt 'summarize' has no version 9"),
        (prompts("summarize", alias="live"), "prompt 'summarize' has no alias 'live'"),
        (prompts("summarizer", 1), "prompt 'summarizer' does not exist: 'summarizer' is a model"),
    ],
)
def test_unknown_things_are_not_found_by_name(demo: Demo, ref: RegistryRef, message: str) -> None:
    resolve = demo.registry.resolve_model if ref.kind == "models" else demo.registry.resolve_prompt
    with pytest.raises(NotFound) as caught:
        resolve(ref)
    assert message in caught.value.message


def test_reads_prompt_templates(demo: Demo) -> None:
    v1, v2 = demo_templates()
    assert demo.registry.get_prompt_template("summarize", demo.prompt_versions[0]) == v1
    assert demo.registry.get_prompt_template("summarize", demo.prompt_versions[1]) == v2
    with pytest.raises(NotFound, match="has no version 99"):
        demo.registry.get_prompt_template("summarize", 99)


def test_demo_registration_is_idempotent(demo: Demo, mlflow_store: str) -> None:
    artifacts = demo.registry.artifact_location
    assert register_demo_models(mlflow_store, artifact_location=artifacts) == demo.model_versions
    assert push_demo_prompts(mlflow_store) == demo.prompt_versions


# --- releases ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_uri", "prompt_uri", "field"),
    [
        ("models:/summarizer", "prompts:/summarize/1", "model_uri"),
        ("prompts:/summarize/1", "prompts:/summarize/1", "model_uri"),
        ("models:/summarizer/1", "prompts:/summarize/one", "prompt_uri"),
        ("models:/summarizer/1", "models:/summarizer/1", "prompt_uri"),
    ],
)
def test_malformed_uris_are_invalid_input(
    demo: Demo, model_uri: str, prompt_uri: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        demo.registry.register_release("bad", model_uri, prompt_uri)
    assert caught.value.field == field


def test_register_release_builds_a_bundle_that_renders_and_calls_the_model(demo: Demo) -> None:
    registry = demo.registry
    registry.client.set_registered_model_alias("summarizer", "candidate", "1")
    started = time.perf_counter()
    release = registry.register_release(
        "sum-one", "models:/summarizer@candidate", "prompts:/summarize/1"
    )
    elapsed = time.perf_counter() - started
    assert release == ResolvedRelease("summarizer", 1, "summarize", 1, "bgserve.sum-one", 1)
    texts = ["The meeting moved to Friday. Bring snacks.", " ".join(["word"] * 20) + "."]
    with registry.uris():
        bundle = mlflow.pyfunc.load_model("models:/bgserve.sum-one/1")
        answer = bundle.predict(pd.DataFrame({"text": texts}))
    assert list(answer) == ["The meeting moved to Friday.", " ".join(["word"] * 12) + " ..."]
    tags = registry.client.get_model_version("bgserve.sum-one", "1").tags
    assert tags["bgserve.model_uri"] == "models:/summarizer/1"
    assert tags["bgserve.prompt_uri"] == "prompts:/summarize/1"
    assert tags["bgserve.model_ref"] == "models:/summarizer@candidate"
    assert tags["bgserve.release"] == "sum-one"
    assert elapsed < 30


def test_bundle_sends_the_rendered_prompt_under_the_base_models_column(
    demo: Demo, echo_model: str
) -> None:
    registry = demo.registry
    registry.push_prompt("qa", "Q: {{ question }} ({{lang}}) {{question}}", None, None)
    release = registry.register_release("echo-qa", echo_model, "prompts:/qa/1")
    with registry.uris():
        bundle = mlflow.pyfunc.load_model(f"models:/{release.bundle_name}/1")
        answer = bundle.predict(pd.DataFrame({"question": ["why {{lang}}?"], "lang": ["en"]}))
    assert list(answer) == ["<Q: why {{lang}}? (en) why {{lang}}?>"]
    signature = bundle.metadata.signature
    assert signature.inputs.input_names() == ["question", "lang"]


def test_bundle_answers_what_the_template_and_model_answer(demo: Demo) -> None:
    release = demo.registry.register_release(
        "sum-two", "models:/summarizer/2", "prompts:/summarize/2"
    )
    template = demo_templates()[1]
    text = "One two three four five six seven eight nine ten. Eleven."
    with demo.registry.uris():
        answer = mlflow.pyfunc.load_model(f"models:/{release.bundle_name}/1").predict(
            pd.DataFrame({"text": [text]})
        )
    assert list(answer) == [summarize(render(template, {"text": text}), 8)]


def test_prompt_is_linked_to_the_bundle(demo: Demo) -> None:
    release = demo.registry.register_release(
        "linked", "models:/summarizer/1", "prompts:/summarize/2"
    )
    version = demo.registry.client.get_model_version(release.bundle_name, "1")
    run = demo.registry.client.get_run(version.run_id)
    assert '"name": "summarize", "version": "2"' in run.data.tags["mlflow.linkedPrompts"]


def test_register_release_refuses_a_template_without_variables(demo: Demo) -> None:
    demo.registry.push_prompt("fixed", "Say hello.", None, None)
    with pytest.raises(InvalidInput, match="no \\{\\{variable\\}\\}"):
        demo.registry.register_release("fixed", "models:/summarizer/1", "prompts:/fixed/1")


# --- aliases -----------------------------------------------------------------


@dataclass(frozen=True)
class Parts:
    model_name: str
    model_version: int
    prompt_name: str
    prompt_version: int
    bundle_name: str
    bundle_version: int


def where(
    registry: MlflowRegistry, deployment: str, parts: Parts
) -> dict[str, dict[str, int | None]]:
    return registry.alias_versions(
        deployment,
        model_name=parts.model_name,
        prompt_name=parts.prompt_name,
        bundle_name=parts.bundle_name,
    )


def test_move_aliases_forward_and_back(demo: Demo) -> None:
    registry = demo.registry
    bundle = registry.register_release("alias-a", "models:/summarizer/1", "prompts:/summarize/1")
    v1 = Parts("summarizer", 1, "summarize", 1, bundle.bundle_name, 1)
    registry.client.create_model_version(bundle.bundle_name, "file:///nowhere")
    v2 = Parts("summarizer", 2, "summarize", 2, bundle.bundle_name, 2)

    registry.move_aliases("web", v1, None)
    assert where(registry, "web", v1) == {
        part: {"live": 1, "previous": None} for part in ("model", "prompt", "bundle")
    }
    registry.move_aliases("web", v2, v1)
    registry.move_aliases("web", v2, v1)
    assert where(registry, "web", v1) == {
        part: {"live": 2, "previous": 1} for part in ("model", "prompt", "bundle")
    }
    registry.move_aliases("web", v1, v2)
    assert where(registry, "web", v1) == {
        part: {"live": 1, "previous": 2} for part in ("model", "prompt", "bundle")
    }
    registry.move_aliases("web", v1, None)
    assert where(registry, "web", v1)["model"] == {"live": 1, "previous": None}


def test_move_aliases_leaves_no_stale_alias_on_another_name(demo: Demo) -> None:
    registry = demo.registry
    a = registry.register_release("alias-b", "models:/summarizer/1", "prompts:/summarize/1")
    b = registry.register_release("alias-c", "models:/summarizer/2", "prompts:/summarize/2")
    old = Parts("summarizer", 1, "summarize", 1, a.bundle_name, 1)
    new = Parts("summarizer", 2, "summarize", 2, b.bundle_name, 1)

    registry.move_aliases("api", old, None)
    registry.move_aliases("api", new, old)
    assert where(registry, "api", old)["bundle"] == {"live": None, "previous": 1}
    assert where(registry, "api", new)["bundle"] == {"live": 1, "previous": None}
    registry.move_aliases("api", old, new)
    assert where(registry, "api", old)["bundle"] == {"live": 1, "previous": None}
    assert where(registry, "api", new)["bundle"] == {"live": None, "previous": 1}


def test_move_aliases_to_a_missing_version_is_not_found(demo: Demo) -> None:
    missing = Parts("summarizer", 42, "summarize", 1, "bgserve.alias-a", 1)
    with pytest.raises(NotFound):
        demo.registry.move_aliases("gone", missing, None)


# --- prompts -----------------------------------------------------------------


def test_push_prompt_creates_only_on_change(demo: Demo) -> None:
    registry = demo.registry
    assert registry.push_prompt("greet", "Hi {{name}}", "first", {"team": "a"}) == (1, True)
    assert registry.push_prompt("greet", "Hi {{name}}", "again", None) == (1, False)
    assert registry.push_prompt("greet", "Hello {{name}}", None, None) == (2, True)
    assert registry.push_prompt("greet", "Hi {{name}}", None, None) == (3, True)


def test_push_prompt_refuses_a_model_name(demo: Demo) -> None:
    with pytest.raises(InvalidInput, match="'summarizer' is a registered model"):
        demo.registry.push_prompt("summarizer", "Hi {{name}}", None, None)


# --- failures and global state -----------------------------------------------


def test_unreachable_registry_is_registry_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    registry = MlflowRegistry("http://127.0.0.1:9", None)
    started = time.perf_counter()
    with pytest.raises(RegistryUnavailable, match="MLflow registry"):
        registry.resolve_model(models("m", 1))
    with pytest.raises(RegistryUnavailable):
        registry.register_release("r", "models:/m/1", "prompts:/p/1")
    with pytest.raises(RegistryUnavailable):
        registry.push_prompt("p", "{{x}}", None, None)
    assert time.perf_counter() - started < 10


def test_unusable_sqlite_store_is_registry_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    registry = MlflowRegistry(f"sqlite:///{blocker / 'mlflow.db'}", None)
    with pytest.raises(RegistryUnavailable, match="opening the MLflow store"):
        registry.resolve_prompt(prompts("p", 1))


def test_mlflow_uris_restores_global_state(mlflow_store: str) -> None:
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri(), dict(os.environ))
    with mlflow_uris("sqlite:///elsewhere.db", "sqlite:///other.db"):
        assert mlflow.get_tracking_uri() == "sqlite:///elsewhere.db"
        assert mlflow.get_registry_uri() == "sqlite:///other.db"
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri(), dict(os.environ)) == before


def test_bundle_name_template_may_use_only_release() -> None:
    with pytest.raises(InvalidInput) as caught:
        MlflowRegistry(None, None, bundle_name_template="bg.{release}.{team}")
    assert caught.value.field == "bundle_name_template"


def test_bundle_loads_where_bgserve_is_not_installed(demo: Demo, mlflow_store: str) -> None:
    release = demo.registry.register_release(
        "no-bgserve", "models:/summarizer/1", "prompts:/summarize/1"
    )
    script = (
        "import sys; sys.modules['bgserve'] = None\n"
        "import mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model('models:/{release.bundle_name}/1')\n"
        "print(model.predict(pd.DataFrame({'text': ['Done. Really.']}))[0])\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "MLFLOW_REGISTRY_URI": mlflow_store}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "Done."


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:////data/mlflow.db", "/data/mlartifacts"),
        ("sqlite:////data/mlflow.db?timeout=5", "/data/mlartifacts"),
        ("sqlite:///:memory:", None),
        ("http://mlflow:5000", None),
        (None, None),
    ],
)
def test_sqlite_artifacts_default_beside_the_database(
    uri: str | None, expected: str | None
) -> None:
    assert MlflowRegistry(uri, None).artifact_location == expected
