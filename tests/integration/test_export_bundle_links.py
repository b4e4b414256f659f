"""``bgserve export-bundle`` into a symbolic link: a clear refusal, nothing written where
the link points."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bgserve.cli.app import app
from bgserve.compose import registry_at
from tests.support.flow import RELEASES, register_demo

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundle_uri(mlflow_store: str) -> str:
    register_demo(mlflow_store)
    _, model, prompt = RELEASES["v1"]
    release = registry_at(mlflow_store).register_release("exported-link", model, prompt)
    return f"models:/{release.bundle_name}/{release.bundle_version}"


def export(mlflow_store: str, bundle_uri: str, dest: Path) -> tuple[int, str]:
    runner = CliRunner(env={"MLFLOW_TRACKING_URI": mlflow_store})
    result = runner.invoke(app, ["export-bundle", bundle_uri, str(dest)])
    # A traceback would be an exception other than the CLI's own exit.
    assert isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("target_exists", [False, True], ids=["dangling", "to-empty-folder"])
def test_a_link_as_the_folder_is_refused_and_nothing_written_through_it(
    mlflow_store: str, bundle_uri: str, tmp_path: Path, target_exists: bool
) -> None:
    target = tmp_path / "elsewhere"
    if target_exists:
        target.mkdir()
    link = tmp_path / "out"
    link.symlink_to(target, target_is_directory=True)

    code, output = export(mlflow_store, bundle_uri, link)

    assert code == 1, output
    assert "is a symbolic link" in output
    assert link.is_symlink()
    assert list(target.iterdir()) == [] if target_exists else not target.exists()


def test_a_folder_under_a_dangling_link_is_a_clear_error(
    mlflow_store: str, bundle_uri: str, tmp_path: Path
) -> None:
    (tmp_path / "gone").symlink_to(tmp_path / "missing", target_is_directory=True)

    code, output = export(mlflow_store, bundle_uri, tmp_path / "gone" / "out")

    assert code == 1, output
    assert "cannot create" in output
    assert not (tmp_path / "missing").exists()
