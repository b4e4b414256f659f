"""A name or URI with a trailing newline is refused like any other bad one (``$`` in a
Python pattern also matches before a final newline): a 4xx naming the field, and nothing
created, neither on disk nor in MLflow. Real slots, a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bgserve.cli.app import app as cli

pytestmark = pytest.mark.integration


def registered_names(store: str) -> set[str]:
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    return {m.name for m in client.search_registered_models()}


def paths_under(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*")]


def refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field, response.text


def test_a_deployment_name_is_refused_and_no_slot_starts(app: TestClient) -> None:
    home: Path = app.app.state.components.settings.home  # type: ignore[attr-defined]
    ids = app.app.state.ids  # type: ignore[attr-defined]

    refused(app.post("/deployments", json={"name": "nl\n", "release_id": ids["v1"]}), "name")

    assert not [d for d in app.get("/deployments").json() if "\n" in d["name"]]
    assert not [p for p in paths_under(home) if "\n" in p]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "nl-name\n"}, "name"),
        ({"name": "nl-model", "model_uri": "models:/summarizer/1\n"}, "model_uri"),
        ({"name": "nl-prompt", "prompt_uri": "prompts:/summarize/1\n"}, "prompt_uri"),
        ({"name": "nl-alias", "model_uri": "models:/summarizer@champion\n"}, "model_uri"),
    ],
    ids=["name", "model-uri", "prompt-uri", "alias"],
)
def test_a_release_name_or_uri_is_refused_and_nothing_registered(
    app: TestClient, mlflow_store: str, body: dict[str, str], field: str
) -> None:
    before = registered_names(mlflow_store)
    release = {"model_uri": "models:/summarizer/1", "prompt_uri": "prompts:/summarize/1", **body}

    refused(app.post("/releases", json=release), field)

    assert registered_names(mlflow_store) == before
    assert body["name"] not in {r["name"] for r in app.get("/releases").json()}


def test_a_golden_set_name_is_refused_not_looked_up(app: TestClient) -> None:
    ids = app.app.state.ids  # type: ignore[attr-defined]
    created = app.post("/deployments", json={"name": "golden-nl", "release_id": ids["v1"]})
    assert created.status_code == 201, created.text
    staged = app.post("/deployments/golden-nl/green", json={"release_id": ids["reworded"]})
    assert staged.status_code == 200, staged.text

    refused(
        app.post("/deployments/golden-nl/compare", json={"golden_set": "summarize\n"}),
        "golden_set",
    )

    assert app.get("/deployments/golden-nl").json()["gate"] is None


def test_an_llm_model_name_is_refused_and_nothing_registered(
    app: TestClient, mlflow_store: str
) -> None:
    before = registered_names(mlflow_store)
    body = {"name": "nl-llm\n", "openai_url": "http://127.0.0.1:9/v1", "openai_model": "m"}

    refused(app.post("/models/llm", json=body), "name")

    assert registered_names(mlflow_store) == before


def test_a_bundle_uri_is_refused_and_no_folder_made(
    app: TestClient, mlflow_store: str, tmp_path: Path
) -> None:
    bundle = app.get("/releases").json()[0]["bundle_uri"]
    dest = tmp_path / "out"
    runner = CliRunner(env={"MLFLOW_TRACKING_URI": mlflow_store})

    result = runner.invoke(cli, ["export-bundle", f"{bundle}\n", str(dest)])

    assert result.exit_code == 1, result.output
    assert "bundle_uri" in result.output and "models:/<name>/<version>" in result.output
    assert not dest.exists()


def test_a_prompt_name_is_refused_before_mlflow_is_contacted(tmp_path: Path) -> None:
    directory = tmp_path / "greeting"
    directory.mkdir()
    (directory / "template.txt").write_text("Say hi to {{text}}\n", encoding="utf-8")
    (directory / "prompt.yaml").write_text('name: "greeting\\n"\n', encoding="utf-8")
    case = {"id": "c1", "inputs": {"text": "you"}}
    (directory / "golden.jsonl").write_text(json.dumps(case) + "\n", encoding="utf-8")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"

    result = CliRunner().invoke(
        cli, ["prompts", "push", str(directory)], env={"MLFLOW_TRACKING_URI": store}
    )

    assert result.exit_code == 1, result.output
    assert "not a valid MLflow prompt name" in " ".join(result.output.split())
    assert not (tmp_path / "mlflow.db").exists()
