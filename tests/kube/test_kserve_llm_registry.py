"""LLMs registered with `bgserve models register-llm` reach the KServe backend's objects
through the registry (``llm_lookup``), on a real kube-apiserver with the official CRDs:
an endpoint's key as a ``secretKeyRef`` to the Secret named at registration (its value
nowhere: not in MLflow, the objects, the requests bgserve sent, the logs), and a GGUF
registered by storage URI as the slot's ``STORAGE_URI``."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pytest
from kubernetes import client
from typer.testing import CliRunner

from bgserve.cli.app import app as cli
from bgserve.compose.backends import llm_lookup
from bgserve.domain.release import Release
from bgserve.kube.kserve.backend import KServeBackend, required_rbac
from bgserve.kube.kserve.llm_objects import WEIGHTS_DIR_ENV
from bgserve.kube.kserve.objects import isvc_name
from bgserve.kube.objects import MOUNT_PATH
from bgserve.registry.mlflow_registry import MlflowRegistry
from tests.kube.test_kserve_backend import fake_kserve
from tests.support.kube import kserve_backend
from tests.support.kube_namespace import KubeNamespace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "sk-live-5f0c1d2e3a4b5c6d7e8f"
KEY_ENV = "LLAMA_API_KEY"


def register(mlflow_store: str, home: Path, *args: str) -> tuple[str, int]:
    """``bgserve models register-llm NAME ARGS``: the model name and new version."""
    env = {"MLFLOW_TRACKING_URI": mlflow_store, "BGSERVE_HOME": str(home)}
    done = CliRunner().invoke(cli, ["models", "register-llm", *args], env=env)
    assert done.exit_code == 0, done.output
    assert KEY not in done.output
    name, version = done.output.strip().removeprefix("models:/").split("/")
    return name, int(version)


def release_pinning(name: str, version: int) -> Release:
    return Release(
        id=1,
        name="chat-v1",
        model_name=name,
        model_version=version,
        prompt_name="answer",
        prompt_version=1,
        bundle_name="bgserve.chat",
        bundle_version=1,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def backend_reading(ns: KubeNamespace, mlflow_store: str) -> KServeBackend:
    settings = ns.settings(required_rbac("gateway"), slot_ready_timeout_seconds=10)
    registry = MlflowRegistry(mlflow_store, mlflow_store)
    return kserve_backend(settings, api=ns.api_for(settings), llms=llm_lookup(registry))


def slot_container(ns: KubeNamespace) -> dict[str, Any]:
    isvc = ns.get("inferenceservices", isvc_name("chat", 1))
    assert isvc is not None
    (container,) = isvc["spec"]["predictor"]["containers"]
    return dict(container)


def test_a_registered_secret_reference_fills_the_key_variable_and_the_key_is_nowhere(
    kube_ns: KubeNamespace,
    mlflow_store: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, KEY)  # the key is in bgserve's environment too: never copied
    # The Secret's owner created it; bgserve's Role cannot even read Secrets.
    secret = {"metadata": {"name": "llm-endpoint"}, "stringData": {"api-key": KEY}}
    client.CoreV1Api(kube_ns.admin).create_namespaced_secret(kube_ns.namespace, secret)
    name, version = register(
        mlflow_store, tmp_path, "secret-llm",
        "--openai-url", "http://llama.models.svc:8000/v1", "--openai-model", "llama",
        "--api-key-env", KEY_ENV, "--api-key-secret", "llm-endpoint/api-key",
    )  # fmt: skip
    backend = backend_reading(kube_ns, mlflow_store)
    with fake_kserve(kube_ns):
        slot = backend.ensure_slot("chat", release_pinning(name, version))
    assert slot.ready
    ref = {"secretKeyRef": {"name": "llm-endpoint", "key": "api-key"}}
    assert {"name": KEY_ENV, "valueFrom": ref} in slot_container(kube_ns)["env"]
    stored = kube_ns.get("inferenceservices", isvc_name("chat", 1))
    assert KEY not in json.dumps(stored)
    assert not any(KEY in json.dumps(r.body) for r in kube_ns.requests if r.body is not None)
    registry = MlflowRegistry(mlflow_store, mlflow_store).client
    model_version = registry.get_model_version(name, str(version))
    run = registry.get_run(model_version.run_id)
    assert KEY not in json.dumps(run.to_dictionary()) and KEY not in str(model_version)
    folder = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    assert not any(KEY.encode() in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert KEY not in caplog.text
    backend.close()


def test_a_gguf_registered_by_uri_is_fetched_by_the_storage_initializer(
    kube_ns: KubeNamespace, mlflow_store: str, tmp_path: Path
) -> None:
    uri = "hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q4_1.gguf"
    name, version = register(mlflow_store, tmp_path, "smollm2-by-uri", "--gguf-uri", uri)
    backend = backend_reading(kube_ns, mlflow_store)
    release = release_pinning(name, version)
    with fake_kserve(kube_ns):
        backend.ensure_slot("chat", release)
    container = slot_container(kube_ns)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["STORAGE_URI"] == uri and env[WEIGHTS_DIR_ENV] == MOUNT_PATH
    args = container["args"]
    assert args[args.index("--model-uri") + 1] == release.bundle_uri
    backend.close()
