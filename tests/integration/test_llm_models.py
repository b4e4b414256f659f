"""Registering LLM base models (POST /models/llm, `bgserve models register-llm`), chat
prompts in releases, and the llama.cpp start-up check, on a real MLflow store."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from fastapi.testclient import TestClient
from mlflow.pyfunc.model import PythonModel
from typer.testing import CliRunner

from bgserve.api.app import create_app
from bgserve.cli.app import app as cli
from bgserve.compose.backends import llm_lookup
from bgserve.domain.release import Release
from bgserve.kube.kserve.llm_objects import LlmServing
from bgserve.llm.safety import (
    SAFE_CMAKE_ARGS,
    UnsafeLlamaBuild,
    ensure_llama_works,
    evaluate_in_child,
    library_key,
)
from bgserve.llm.smollm2 import smollm2_path
from bgserve.registry.llm_models import LlmSpec, register_llm
from bgserve.registry.mlflow_registry import MlflowRegistry
from tests.support.flow import make_settings
from tests.support.inprocess_api import build_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SECRET = "sk-never-stored-0123456789"


@pytest.fixture(scope="module")
def allowed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory the API may read GGUF files from, with a file that is not GGUF."""
    folder = tmp_path_factory.mktemp("gguf-allowed")
    (folder / "not-gguf.gguf").write_bytes(b"ELF not a model")
    (folder / "a-directory").mkdir()
    return folder


@pytest.fixture(scope="module")
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GGUF-looking file in a directory the API must not read from."""
    folder = tmp_path_factory.mktemp("gguf-outside")
    (folder / "secret.gguf").write_bytes(b"GGUF private bytes")
    return folder


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory, mlflow_store: str, allowed: Path
) -> Iterator[TestClient]:
    settings = make_settings(Path(tmp_path_factory.mktemp("llm-api")), mlflow_store)
    settings = settings.model_copy(update={"llm_gguf_dirs": [smollm2_path().parent, allowed]})
    with TestClient(
        create_app(settings, build=build_in_process), base_url="http://127.0.0.1"
    ) as client:
        yield client


@pytest.fixture(scope="module")
def registry(mlflow_store: str, tmp_path_factory: pytest.TempPathFactory) -> MlflowRegistry:
    artifacts = str(tmp_path_factory.mktemp("llm-artifacts"))
    return MlflowRegistry(mlflow_store, mlflow_store, artifact_location=artifacts)


def mlmodel_of(model_uri: str) -> dict[str, Any]:
    local = Path(mlflow.artifacts.download_artifacts(f"{model_uri}/MLmodel"))
    loaded: dict[str, Any] = yaml.safe_load(local.read_text())
    return loaded


def test_a_gguf_file_registers_as_a_model_version_holding_the_file(api: TestClient) -> None:
    response = api.post("/models/llm", json={"name": "smol-api", "gguf": str(smollm2_path())})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["kind"] == "gguf" and body["name"] == "smol-api"
    assert body["model_uri"] == f"models:/smol-api/{body['version']}"
    stored = Path(mlflow.artifacts.download_artifacts(f"{body['model_uri']}/artifacts"))
    (copied,) = list(stored.iterdir())
    assert copied.stat().st_size == smollm2_path().stat().st_size
    config = mlmodel_of(body["model_uri"])["flavors"]["python_function"]["config"]
    assert config["kind"] == "gguf"


def test_an_endpoint_pins_url_model_and_key_name_never_the_key(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_TEST_KEY", SECRET)
    body = {
        "name": "remote-llm",
        "openai_url": "http://127.0.0.1:9/v1",
        "openai_model": "smollm2",
        "api_key_env": "LLM_TEST_KEY",
    }
    response = api.post("/models/llm", json=body)
    assert response.status_code == 201, response.text
    uri = response.json()["model_uri"]
    config = mlmodel_of(uri)["flavors"]["python_function"]["config"]
    assert config == {
        "kind": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "model": "smollm2",
        "api_key_env": "LLM_TEST_KEY",
    }
    folder = Path(mlflow.artifacts.download_artifacts(uri))
    stored = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert SECRET.encode() not in stored


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"gguf": "{allowed}/nonexistent.gguf"}, "gguf"),
        ({"gguf": "{allowed}/not-gguf.gguf"}, "gguf"),  # a file, but not GGUF
        ({"gguf": "{allowed}/a-directory"}, "gguf"),
        ({"gguf": "model.gguf"}, "gguf"),  # relative
        ({}, "openai_url"),  # neither kind
        ({"openai_url": "ftp://h/v1", "openai_model": "m"}, "openai_url"),
        ({"openai_url": "http://h:1/v1"}, "openai_model"),
        (
            {"openai_url": "http://h:1/v1", "openai_model": "m", "api_key_env": SECRET},
            "api_key_env",
        ),
        ({"gguf": "GGUF", "openai_url": "http://h:1/v1", "openai_model": "m"}, "gguf"),
        ({"gguf": 3}, "gguf"),
        ({"gguf": "x", "temperature": 1}, "temperature"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    api: TestClient, allowed: Path, body: dict[str, Any], field: str
) -> None:
    if isinstance(body.get("gguf"), str):
        body = {**body, "gguf": body["gguf"].replace("{allowed}", str(allowed))}
    response = api.post("/models/llm", json={"name": "bad", **body})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field, response.text
    assert SECRET not in response.text  # a key given by mistake is not echoed back


def test_by_default_the_api_refuses_gguf_paths_naming_the_setting(
    tmp_path: Path, mlflow_store: str
) -> None:
    settings = make_settings(tmp_path, mlflow_store)
    with TestClient(
        create_app(settings, build=build_in_process), base_url="http://127.0.0.1"
    ) as client:
        response = client.post("/models/llm", json={"name": "m", "gguf": str(smollm2_path())})
    assert response.status_code == 403, response.text
    assert "BGSERVE_LLM_GGUF_DIRS" in response.json()["message"]
    assert (
        MlflowRegistry(mlflow_store, mlflow_store).client.search_registered_models("name = 'm'")
        == []
    )


@pytest.mark.parametrize("escape", ["dot-dot", "symlinked-file", "symlinked-directory"])
def test_a_path_escaping_the_allowed_directories_is_refused(
    api: TestClient, allowed: Path, outside: Path, escape: str
) -> None:
    if escape == "dot-dot":
        path = allowed / ".." / outside.name / "secret.gguf"
    elif escape == "symlinked-file":
        path = allowed / "link.gguf"
        path.symlink_to(outside / "secret.gguf")
    else:
        (allowed / "sub").symlink_to(outside, target_is_directory=True)
        path = allowed / "sub" / "secret.gguf"
    response = api.post("/models/llm", json={"name": f"escape-{escape}", "gguf": str(path)})
    assert response.status_code == 403, response.text
    assert "BGSERVE_LLM_GGUF_DIRS" in response.json()["message"]
    assert str(outside) not in response.text  # where the link leads stays untold


def test_a_bad_name_and_a_prompt_name_are_refused(api: TestClient, mlflow_store: str) -> None:
    gguf = str(smollm2_path())
    assert api.post("/models/llm", json={"name": "a b", "gguf": gguf}).json()["field"] == "name"
    mlflow.genai.register_prompt(name="taken-by-a-prompt", template="{{x}}")
    response = api.post("/models/llm", json={"name": "taken-by-a-prompt", "gguf": gguf})
    assert response.status_code == 422 and response.json()["field"] == "name", response.text


def test_the_cli_prints_the_new_model_uri(mlflow_store: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"MLFLOW_TRACKING_URI": mlflow_store, "BGSERVE_HOME": str(tmp_path)}
    args = ["models", "register-llm", "smol-cli", "--gguf", str(smollm2_path())]
    first = runner.invoke(cli, args, env=env)
    second = runner.invoke(cli, args, env=env)
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    # The URI alone on stdout (stderr may show MLflow's progress where tqdm is installed).
    assert first.stdout.strip() == "models:/smol-cli/1"
    assert second.stdout.strip() == "models:/smol-cli/2"
    bad = runner.invoke(cli, ["models", "register-llm", "x", "--gguf", sys.executable], env=env)
    assert bad.exit_code == 1 and "not a GGUF model file" in bad.output


def test_a_chat_prompt_release_carries_messages_model_config_and_schema(
    registry: MlflowRegistry, mlflow_store: str
) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    messages = [
        {"role": "system", "content": "You are a {{style}} assistant."},
        {"role": "user", "content": "{{question}}"},
    ]
    with registry.uris():
        mlflow.genai.register_prompt(
            name="chat-release",
            template=messages,
            model_config={"temperature": 0.0, "max_tokens": 7, "top_k": 3},
            response_format=schema,
        )
    llm = api_free_llm(registry)
    resolved = registry.register_release("chat-rel", llm, "prompts:/chat-release/1")
    mlmodel = mlmodel_of(f"models:/{resolved.bundle_name}/{resolved.bundle_version}")
    config = mlmodel["flavors"]["python_function"]["config"]
    assert config["messages"] == messages and "template" not in config
    assert config["model_config"] == {"temperature": 0.0, "max_tokens": 7}  # top_k is not ours
    assert config["response_format"] == schema
    assert config["variables"] == ["style", "question"]


def api_free_llm(registry: MlflowRegistry) -> str:
    from bgserve.registry.llm_models import LlmSpec, register_llm

    spec = LlmSpec("chat-base", openai_url="http://127.0.0.1:9/v1", openai_model="m")
    return register_llm(registry, spec).model_uri


def test_the_llama_check_passes_this_build_and_caches_the_verdict(tmp_path: Path) -> None:
    cache = tmp_path / "llama-check.json"
    assert evaluate_in_child(smollm2_path()) == "ok"
    ensure_llama_works(smollm2_path(), cache)
    assert library_key() in cache.read_text()


def test_a_build_that_crashed_is_refused_with_the_safe_flags(tmp_path: Path) -> None:
    cache = tmp_path / "llama-check.json"
    cache.write_text(f'{{"{library_key()}": "signal SIGSEGV"}}')
    with pytest.raises(UnsafeLlamaBuild) as refused:
        ensure_llama_works(smollm2_path(), cache)
    assert "SIGSEGV" in refused.value.message and SAFE_CMAKE_ARGS in refused.value.message


def test_a_child_killed_by_a_signal_is_reported_as_that_signal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A "model" that makes the child die the way a bad build does: by a signal.
    import bgserve.llm.safety as safety

    monkeypatch.setattr(safety, "_CHILD", "import os, signal; os.kill(os.getpid(), 11)")
    assert evaluate_in_child(smollm2_path()) == "signal SIGSEGV"


class _Echo(PythonModel):
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input


def test_the_kserve_backend_learns_an_llm_base_model_from_the_registry(
    registry: MlflowRegistry,
) -> None:
    endpoint = LlmSpec(
        "lookup-llm", openai_url="http://llm:8080/v1", openai_model="smol", api_key_env="K"
    )
    done = register_llm(registry, endpoint)
    with registry.uris():
        mlflow.pyfunc.log_model(
            name="echo", python_model=_Echo(), registered_model_name="lookup-classic"
        )
    lookup = llm_lookup(registry)
    llm = lookup(release_of("lookup-llm", done.version))
    assert llm == LlmServing(
        "openai", served_model_name="smol", openai_url="http://llm:8080/v1", api_key_env="K"
    )
    assert lookup(release_of("lookup-classic", 1)) is None


def release_of(model: str, version: int) -> Release:
    return Release(
        id=version,
        name="r",
        model_name=model,
        model_version=version,
        prompt_name="p",
        prompt_version=1,
        bundle_name="b",
        bundle_version=1,
        created_at=datetime.now(UTC),
    )
