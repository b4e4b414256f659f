"""Registering an endpoint's key as a Kubernetes Secret reference and a GGUF by storage URI
(POST /models/llm, `bgserve models register-llm`) on a real MLflow store: only the names
are stored, the registry hands them to the Kubernetes renderings, and the local backend
refuses a GGUF it would have to download."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bgserve.api.app import create_app
from bgserve.backends.local.backend import LocalBackend
from bgserve.cli.app import app as cli
from bgserve.compose.backends import llm_lookup
from bgserve.domain.release import Release
from bgserve.errors import BackendError
from bgserve.kube.kserve.llm_objects import LlmServing
from bgserve.llm.references import SecretKeyRef
from bgserve.registry.llm_models import LlmBase, read_llm
from bgserve.registry.mlflow_registry import MlflowRegistry
from tests.support.flow import make_settings
from tests.support.inprocess_api import build_in_process

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENDPOINT = {"openai_url": "http://llama.models:8000/v1", "openai_model": "llama"}
GGUF_URI = "s3://weights/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[TestClient]:
    settings = make_settings(Path(tmp_path_factory.mktemp("llm-refs")), mlflow_store)
    with TestClient(
        create_app(settings, build=build_in_process), base_url="http://127.0.0.1"
    ) as client:
        yield client


@pytest.fixture(scope="module")
def registry(mlflow_store: str, tmp_path_factory: pytest.TempPathFactory) -> MlflowRegistry:
    artifacts = str(tmp_path_factory.mktemp("llm-ref-artifacts"))
    return MlflowRegistry(mlflow_store, mlflow_store, artifact_location=artifacts)


def config_of(model_uri: str) -> dict[str, Any]:
    local = Path(mlflow.artifacts.download_artifacts(f"{model_uri}/MLmodel"))
    config: dict[str, Any] = yaml.safe_load(local.read_text())["flavors"]["python_function"][
        "config"
    ]
    return config


def release_of(model: str, version: int, bundle: tuple[str, int] = ("b", 1)) -> Release:
    return Release(
        id=version,
        name="r",
        model_name=model,
        model_version=version,
        prompt_name="p",
        prompt_version=1,
        bundle_name=bundle[0],
        bundle_version=bundle[1],
        created_at=datetime.now(UTC),
    )


def test_an_endpoint_key_is_stored_as_the_secrets_name_and_key(
    api: TestClient, registry: MlflowRegistry
) -> None:
    secret = {"name": "llm-endpoint", "key": "api-key"}
    body = {"name": "secret-api", **ENDPOINT, "api_key_env": "LLAMA_KEY", "api_key_secret": secret}
    response = api.post("/models/llm", json=body)
    assert response.status_code == 201, response.text
    done = response.json()
    assert config_of(done["model_uri"]) == {
        "kind": "openai",
        "base_url": ENDPOINT["openai_url"],
        "model": "llama",
        "api_key_env": "LLAMA_KEY",
        "api_key_secret": secret,
    }
    ref = SecretKeyRef("llm-endpoint", "api-key")
    assert read_llm(registry, "secret-api", done["version"]) == LlmBase(
        "openai", "llama", ENDPOINT["openai_url"], "LLAMA_KEY", ref
    )
    lookup = llm_lookup(registry)
    assert lookup(release_of("secret-api", done["version"])) == LlmServing(
        "openai",
        "llama",
        openai_url=ENDPOINT["openai_url"],
        api_key_env="LLAMA_KEY",
        api_key_secret=ref,
    )


def test_a_gguf_uri_registers_by_reference_copying_nothing(
    api: TestClient, registry: MlflowRegistry
) -> None:
    response = api.post("/models/llm", json={"name": "gguf-by-uri", "gguf_uri": GGUF_URI})
    assert response.status_code == 201, response.text
    done = response.json()
    assert done["kind"] == "gguf"
    assert config_of(done["model_uri"])["weights_uri"] == GGUF_URI
    folder = Path(mlflow.artifacts.download_artifacts(done["model_uri"]))
    assert not [p for p in folder.rglob("*") if p.suffix == ".gguf"]
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 200_000
    lookup = llm_lookup(registry)
    assert lookup(release_of("gguf-by-uri", done["version"])) == LlmServing(
        "gguf", "gguf-by-uri", weights_uri=GGUF_URI
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**ENDPOINT, "api_key_secret": {"name": "s", "key": "k"}}, "api_key_env"),
        (
            {**ENDPOINT, "api_key_env": "K", "api_key_secret": {"name": "Bad_Name", "key": "k"}},
            "api_key_secret",
        ),
        (
            {**ENDPOINT, "api_key_env": "K", "api_key_secret": {"name": "s", "key": "a/b"}},
            "api_key_secret",
        ),
        ({**ENDPOINT, "api_key_env": "K", "api_key_secret": {"name": "s"}}, "api_key_secret.key"),
        ({**ENDPOINT, "api_key_env": "K", "api_key_secret": "s/k"}, "api_key_secret"),
        ({"gguf_uri": GGUF_URI, "api_key_secret": {"name": "s", "key": "k"}}, "api_key_secret"),
        ({"gguf_uri": "https://h/m.gguf"}, "gguf_uri"),
        ({"gguf_uri": "s3://"}, "gguf_uri"),
        ({"gguf_uri": GGUF_URI, **ENDPOINT}, "gguf_uri"),
    ],
)
def test_bad_references_are_422s_naming_the_field(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    response = api.post("/models/llm", json={"name": "bad-ref", **body})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field, response.text


def test_the_cli_takes_a_secret_as_secret_slash_key_and_a_gguf_uri(
    mlflow_store: str, tmp_path: Path
) -> None:
    runner = CliRunner()
    env = {"MLFLOW_TRACKING_URI": mlflow_store, "BGSERVE_HOME": str(tmp_path)}
    endpoint = ["--openai-url", ENDPOINT["openai_url"], "--openai-model", "llama"]
    key = ["--api-key-env", "LLAMA_KEY", "--api-key-secret", "llm-endpoint/api-key"]
    done = runner.invoke(cli, ["models", "register-llm", "secret-cli", *endpoint, *key], env=env)
    assert done.exit_code == 0, done.output
    secret = config_of(done.output.strip())["api_key_secret"]
    assert secret == {"name": "llm-endpoint", "key": "api-key"}
    by_uri = runner.invoke(
        cli, ["models", "register-llm", "uri-cli", "--gguf-uri", GGUF_URI], env=env
    )
    assert by_uri.exit_code == 0 and config_of(by_uri.output.strip())["weights_uri"] == GGUF_URI
    bad = ["--api-key-env", "LLAMA_KEY", "--api-key-secret", "llm-endpoint"]
    refused = runner.invoke(cli, ["models", "register-llm", "bad-cli", *endpoint, *bad], env=env)
    assert refused.exit_code == 1 and "SECRET/KEY" in refused.output
    alone = runner.invoke(
        cli, ["models", "register-llm", "bad-cli", *endpoint, "--api-key-secret", "s/k"], env=env
    )
    assert alone.exit_code == 1 and "needs api_key_env" in alone.output


def test_the_local_backend_refuses_a_gguf_it_would_have_to_download(
    registry: MlflowRegistry, api: TestClient, tmp_path: Path
) -> None:
    model = api.post("/models/llm", json={"name": "gguf-local", "gguf_uri": GGUF_URI}).json()
    with registry.uris():
        mlflow.genai.register_prompt(name="gguf-local-prompt", template="Say {{x}}")
    resolved = registry.register_release(
        "gguf-local", model["model_uri"], "prompts:/gguf-local-prompt/1"
    )
    release = release_of(
        "gguf-local", model["version"], (resolved.bundle_name, resolved.bundle_version)
    )
    backend = LocalBackend("127.0.0.1", 0, ready_timeout=90, log_dir=tmp_path / "slots")
    try:
        with pytest.raises(BackendError) as refused:
            backend.ensure_slot("chat", release)
        assert backend.slot_info("chat", release.id) is None
    finally:
        backend.close()
    message = refused.value.message
    assert GGUF_URI in message and "register the file itself" in message, message
