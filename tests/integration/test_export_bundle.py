"""``bgserve export-bundle``: a release's bundle as a folder Seldon's agent can load."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from bgserve.cli.app import app
from bgserve.compose import registry_at
from tests.support.flow import RELEASES, register_demo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundle(mlflow_store: str) -> tuple[str, int]:
    register_demo(mlflow_store)
    _, model, prompt = RELEASES["v1"]
    release = registry_at(mlflow_store).register_release("exported", model, prompt)
    return release.bundle_name, release.bundle_version


def export(mlflow_store: str, *args: str) -> tuple[int, str]:
    runner = CliRunner(env={"MLFLOW_TRACKING_URI": mlflow_store})
    result = runner.invoke(app, ["export-bundle", *args])
    return result.exit_code, result.output


def test_the_exported_folder_is_a_self_contained_model_with_its_settings(
    bundle: tuple[str, int], mlflow_store: str, tmp_path: Path
) -> None:
    name, version = bundle
    dest = tmp_path / f"{name}_{version}" / "1"  # where the agent puts it
    code, output = export(mlflow_store, f"models:/{name}/{version}", str(dest))
    assert code == 0, output
    assert (dest / "MLmodel").is_file()
    settings = json.loads((dest / "model-settings.json").read_text())
    assert settings == {
        "name": name,
        "implementation": "bgserve",
        "parameters": {"version": str(version)},
    }
    # Loads from the folder alone: the base model travelled inside the bundle.
    model = mlflow.pyfunc.load_model(str(dest))
    (answer,) = model.predict(pd.DataFrame({"text": ["Ship it today. Then rest."]}))
    assert isinstance(answer, str) and answer


def test_a_folder_with_files_is_refused_and_left_as_it_was(
    bundle: tuple[str, int], mlflow_store: str, tmp_path: Path
) -> None:
    name, version = bundle
    (tmp_path / "keep.txt").write_text("mine")
    code, output = export(mlflow_store, f"models:/{name}/{version}", str(tmp_path))
    assert code == 1 and "is not empty" in output
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_an_unknown_bundle_version_exits_1_naming_it(
    bundle: tuple[str, int], mlflow_store: str, tmp_path: Path
) -> None:
    name, _ = bundle
    code, output = export(mlflow_store, f"models:/{name}/99", str(tmp_path / "out"))
    assert code == 1 and f"models:/{name}/99" in output
    code, output = export(mlflow_store, f"prompts:/{name}/1", str(tmp_path / "out"))
    assert code == 1 and "bundle_uri" in output and "models:/<name>/<version>" in output
