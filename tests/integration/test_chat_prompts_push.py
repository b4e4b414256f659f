"""`bgserve prompts push` / `prompts validate` on chat prompt folders, with a real MLflow
store: what is registered (messages, model_config, response_format), what is refused, and
that a text prompt folder still works."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
import yaml
from typer.testing import CliRunner

from bgserve.cli.app import app
from bgserve.registry.mlflow_registry import MlflowRegistry

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "prompts" / "answer"


def run(*args: str, store: str | None = None) -> tuple[int, str]:
    env = {"MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": store} if store else {}
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **env})
    return result.exit_code, " ".join(result.output.split())


def chat_dir(root: Path, folder: str = "qa", **changes: object) -> Path:
    """A copy of the example chat prompt with ``changes`` applied to its prompt.yaml."""
    directory = root / folder
    shutil.copytree(EXAMPLE, directory)
    meta = yaml.safe_load((directory / "prompt.yaml").read_text(encoding="utf-8"))
    meta.update(changes)
    meta = {k: v for k, v in meta.items() if v is not None}
    (directory / "prompt.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")
    return directory


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_a_chat_prompt_is_registered_with_its_messages_config_and_schema(
    tmp_path: Path, store: str
) -> None:
    directory = chat_dir(tmp_path)
    code, output = run("prompts", "push", str(directory), store=store)
    assert code == 0, output
    assert "registered prompts:/qa/1" in output
    meta = yaml.safe_load((directory / "prompt.yaml").read_text(encoding="utf-8"))
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    version = client.get_prompt_version("qa", "1")
    assert not version.is_text_prompt
    assert version.template == meta["messages"]
    assert version.model_config == meta["model_config"]
    assert version.response_format == meta["response_format"]
    assert version.commit_message == meta["commit_message"]
    assert version.tags["task"] == "question-answering"
    spec = MlflowRegistry(store, store).get_prompt_spec("qa", 1)
    assert spec.is_chat and spec.variables == ["audience", "question"]
    assert spec.response_format == meta["response_format"]

    again = run("prompts", "push", str(directory), store=store)
    assert again[0] == 0 and "nothing changed: prompts:/qa/1" in again[1]
    warmer = chat_dir(tmp_path, "qa2", name="qa", model_config={"temperature": 0.7})
    code, output = run("prompts", "push", str(warmer), store=store)
    assert code == 0 and "registered prompts:/qa/2" in output
    assert client.get_prompt_version("qa", "2").model_config == {"temperature": 0.7}


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"model_config": {"temprature": 0.2}}, "model_config.temprature is not a known setting"),
        ({"model_config": {"max_tokens": -1}}, "model_config.max_tokens is -1"),
        ({"model_config": {"top_p": 3}}, "model_config.top_p is 3"),
        ({"response_format": {"type": "objct"}}, "response_format is not a valid JSON schema"),
        ({"messages": [{"role": "robot", "content": "{{question}}"}]}, "messages[0].role"),
    ],
)
def test_bad_chat_prompts_are_refused_naming_the_key_and_nothing_is_registered(
    tmp_path: Path, store: str, changes: dict[str, object], words: str
) -> None:
    directory = chat_dir(tmp_path, "qa", **changes)
    for verb in ("push", "validate"):
        code, output = run("prompts", verb, str(directory), store=store)
        assert code == 1, output
        assert words in output and "prompt.yaml" in output
    assert not (tmp_path / "mlflow.db").exists()


def test_a_chat_prompt_a_golden_case_cannot_render_is_not_pushed(
    tmp_path: Path, store: str
) -> None:
    messages = [{"role": "user", "content": "{{question}} in {{language}}"}]
    directory = chat_dir(tmp_path, messages=messages)
    code, output = run("prompts", "push", str(directory), store=store)
    assert code == 1
    assert "lint error" in output and "'language'" in output and "capital" in output
    assert "input 'audience'" in output  # unused input: a warning
    assert not (tmp_path / "mlflow.db").exists()
    code, output = run("prompts", "validate", str(directory))
    assert code == 3 and "lint error" in output


def test_template_txt_and_messages_together_are_refused(tmp_path: Path, store: str) -> None:
    directory = chat_dir(tmp_path)
    (directory / "template.txt").write_text("{{question}}", encoding="utf-8")
    code, output = run("prompts", "push", str(directory), store=store)
    assert code == 1 and "both template.txt and messages" in output


def test_validate_checks_a_chat_folder_locally_and_its_golden_cases_with_messages(
    tmp_path: Path,
) -> None:
    directory = chat_dir(tmp_path)
    code, output = run("prompts", "validate", str(directory))
    assert code == 0, output
    assert "qa: chat prompt; variables audience, question" in output
    assert "a response_format schema" in output
    with (directory / "golden.jsonl").open("a", encoding="utf-8") as golden:
        case = {"id": "bad", "inputs": {}, "messages": [{"role": "tool", "content": "x"}]}
        golden.write(json.dumps(case) + "\n")
    code, output = run("prompts", "validate", str(directory))
    assert code == 1 and "messages[0].role" in output and "case 'bad'" in output


def test_model_config_on_a_text_prompt_is_refused(tmp_path: Path, store: str) -> None:
    directory = tmp_path / "plain"
    directory.mkdir()
    (directory / "template.txt").write_text("Say {{text}}", encoding="utf-8")
    (directory / "prompt.yaml").write_text("model_config: {temperature: 0}\n", encoding="utf-8")
    code, output = run("prompts", "push", str(directory), store=store)
    assert code == 1 and "model_config applies to chat prompts only" in output
