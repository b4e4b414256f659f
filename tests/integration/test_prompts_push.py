"""`bgserve prompts push` on real files and a real MLflow store: what it refuses, and where
it registers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from bgserve.cli.app import app

pytestmark = pytest.mark.integration

TEMPLATE = "Summarize:\n{{text}}\n"
CASE = {
    "id": "c1",
    "inputs": {"text": "One. Two."},
    "assert": [{"type": "contains", "value": "One"}],
}


def prompt_dir(root: Path, name: str = "greeting", template: str = TEMPLATE) -> Path:
    directory = root / name
    directory.mkdir()
    (directory / "template.txt").write_text(template, encoding="utf-8")
    (directory / "prompt.yaml").write_text("commit_message: first\n", encoding="utf-8")
    (directory / "golden.jsonl").write_text(json.dumps(CASE) + "\n", encoding="utf-8")
    return directory


def push_in_process(directory: Path, store: str) -> tuple[int, str]:
    """For refusals, which exit before MLflow is ever contacted."""
    result = CliRunner().invoke(
        app, ["prompts", "push", str(directory)], env={"MLFLOW_TRACKING_URI": store}
    )
    return result.exit_code, " ".join(result.output.split())


def push(directory: Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "BGSERVE_"))}
    return subprocess.run(
        [sys.executable, "-m", "bgserve", "prompts", "push", str(directory)],
        env={**clean, "COLUMNS": "200", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def prompt_names(store: str) -> list[str]:
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    return [p.name for p in client.search_prompts()]


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_template_linked_to_the_environment_is_refused_and_nothing_registered(
    tmp_path: Path, store: str
) -> None:
    directory = prompt_dir(tmp_path)
    (directory / "template.txt").unlink()
    (directory / "template.txt").symlink_to("/proc/self/environ")
    code, output = push_in_process(directory, store)
    assert code == 1
    assert "template.txt is a symbolic link" in output
    assert not (tmp_path / "mlflow.db").exists()


def test_links_to_files_outside_and_linked_directories_are_refused(
    tmp_path: Path, store: str
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("token {{text}}", encoding="utf-8")
    directory = prompt_dir(tmp_path)
    (directory / "prompt.yaml").unlink()
    (directory / "prompt.yaml").symlink_to(secret)
    code, output = push_in_process(directory, store)
    assert code == 1 and "prompt.yaml is a symbolic link" in output

    real = prompt_dir(tmp_path, "real")
    linked = tmp_path / "linked"
    linked.symlink_to(real, target_is_directory=True)
    code, output = push_in_process(linked, store)
    assert code == 1 and "not a symbolic link" in output


def test_a_fifo_is_not_read(tmp_path: Path, store: str) -> None:
    directory = prompt_dir(tmp_path)
    (directory / "golden.jsonl").unlink()
    os.mkfifo(directory / "golden.jsonl")
    code, output = push_in_process(directory, store)
    assert code == 1 and "golden.jsonl is not a regular file" in output


@pytest.mark.parametrize(
    ("filename", "size", "limit"),
    [("template.txt", 64 * 1024 + 1, "64 KiB"), ("prompt.yaml", 16 * 1024 + 1, "16 KiB")],
)
def test_oversized_files_are_refused_naming_file_and_limit(
    tmp_path: Path, store: str, filename: str, size: int, limit: str
) -> None:
    directory = prompt_dir(tmp_path)
    filler = "{{text}}" + "x" * (size - 8) if filename == "template.txt" else "#" * size
    (directory / filename).write_text(filler, encoding="utf-8")
    code, output = push_in_process(directory, store)
    assert code == 1
    assert f"{filename} is larger than {limit}" in output


def test_an_invalid_prompt_name_is_refused(tmp_path: Path, store: str) -> None:
    directory = prompt_dir(tmp_path)
    (directory / "prompt.yaml").write_text("name: ../../etc/passwd\n", encoding="utf-8")
    code, output = push_in_process(directory, store)
    assert code == 1
    assert "prompt name '../../etc/passwd'" in output and "MLflow prompt name" in output


def test_a_template_some_golden_case_cannot_render_is_not_pushed(
    tmp_path: Path, store: str
) -> None:
    directory = prompt_dir(tmp_path, template="Hello {{name}}, about {{text}}")
    code, output = push_in_process(directory, store)
    assert code == 1
    assert "lint error" in output and "'name'" in output and "c1" in output
    assert not (tmp_path / "mlflow.db").exists()


def test_push_says_where_it_registers_and_registers_only_changes(
    tmp_path: Path, store: str
) -> None:
    directory = prompt_dir(tmp_path)
    first = push(directory, {"MLFLOW_TRACKING_URI": store}, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"registering in MLflow at {store}" in first.stdout
    assert "registered prompts:/greeting/1" in first.stdout
    again = push(directory, {"MLFLOW_TRACKING_URI": store}, cwd=tmp_path)
    assert again.returncode == 0 and "nothing changed: prompts:/greeting/1" in again.stdout
    assert prompt_names(store) == ["greeting"]
    for noise in ("INFO mlflow", "Creating initial"):
        assert noise not in first.stdout + first.stderr


def test_without_a_tracking_uri_push_uses_bgserve_home_not_the_working_directory(
    tmp_path: Path,
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    directory = prompt_dir(tmp_path)
    result = push(directory, {"BGSERVE_HOME": str(home)}, cwd=work)
    assert result.returncode == 0, result.stderr
    expected = f"sqlite:///{home / 'mlflow.db'}"
    assert f"registering in MLflow at {expected}" in result.stdout
    assert (home / "mlflow.db").is_file() and not (work / "mlflow.db").exists()
    assert prompt_names(expected) == ["greeting"]
