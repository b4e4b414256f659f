"""`POST /prompts/validate` and `bgserve prompts validate DIR --deployment D` with chat
prompts: a real control API (HTTP, in-process slots as records), a real MLflow store, and
SmolLM2 run by llama.cpp as the live base model, loaded by the validation itself."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import uvicorn
import yaml
from typer.testing import CliRunner

from bgserve.api.app import create_app
from bgserve.cli.app import app as cli
from bgserve.llm.smollm2 import smollm2_path
from bgserve.registry.chat_prompts import push_chat_prompt
from bgserve.registry.llm_models import LlmSpec, register_llm
from bgserve.registry.mlflow_registry import MlflowRegistry
from tests.support.flow import make_settings, ok
from tests.support.inprocess_api import build_in_process
from tests.support.models import wait_until
from tests.support.processes import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CONFIG = {"temperature": 0, "max_tokens": 24}
LIVE = [
    {"role": "system", "content": "You are a helpful assistant for {{audience}}. Be brief."},
    {"role": "user", "content": "{{question}}"},
]
PIRATE = [
    {"role": "system", "content": "You are a pirate. Speak like a pirate to {{audience}}."},
    {"role": "user", "content": "{{question}}"},
]
CASES: list[dict[str, Any]] = [
    {"id": "capital", "inputs": {"question": "What is the capital of France?", "audience": "kids"}},
    {"id": "sky", "inputs": {"question": "Why is the sky blue?", "audience": "pilots"}},
    {"id": "tea", "inputs": {"question": "How do I make tea?", "audience": "cooks"}},
]
FOLLOW_UP = {
    "id": "follow-up",
    "inputs": {"question": "How many legs does a spider have?", "audience": "kids"},
    "messages": [
        {"role": "assistant", "content": "Eight."},
        {"role": "user", "content": "And an insect?"},
    ],
}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[str]:
    """The control API over HTTP with deployments ``qa-chat`` (SmolLM2 + a chat prompt)
    and ``qa-text`` (SmolLM2 + a text prompt); its base URL."""
    root = tmp_path_factory.mktemp("chat-validate")
    registry = MlflowRegistry(mlflow_store, mlflow_store, artifact_location=str(root / "art"))
    smol = register_llm(registry, LlmSpec("validate-smol", gguf=smollm2_path())).model_uri
    chat, _ = push_chat_prompt(registry, "validate-live", LIVE, model_config=CONFIG)
    text, _ = registry.push_prompt("validate-text", "Answer briefly: {{question}}")
    port = free_port()
    app = create_app(make_settings(root / "home", mlflow_store), build=build_in_process)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.started, 60, "the control API")
        for deployment, prompt in (
            ("qa-chat", f"validate-live/{chat}"),
            ("qa-text", f"validate-text/{text}"),
        ):
            release = {"name": deployment, "model_uri": smol, "prompt_uri": f"prompts:/{prompt}"}
            created = ok(httpx.post(f"{url}/releases", json=release, timeout=120), 201)
            body = {"name": deployment, "release_id": created["id"]}
            ok(httpx.post(f"{url}/deployments", json=body, timeout=120), 201)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


def validate(api: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{api}/prompts/validate", json=body, timeout=600)


def outputs(result: dict[str, Any], side: str) -> list[str]:
    """One side's answers, after checking that every case was answered."""
    answers = []
    for case in result["report"]["cases"]:
        assert case[side]["error"] is None, case
        answers.append(case[side]["output"])
    return answers


def test_a_reworded_system_prompt_gets_other_answers_from_the_live_llm(api: str) -> None:
    reworded = ok(
        validate(api, deployment="qa-chat", messages=PIRATE, model_config=CONFIG, cases=CASES)
    )
    assert (reworded["live_kind"], reworded["candidate_kind"]) == ("chat", "chat")
    assert reworded["candidate"] == "inline chat prompt"
    assert reworded["live_prompt_uri"] == "prompts:/validate-live/1"
    live, candidate = outputs(reworded, "blue"), outputs(reworded, "green")
    assert all(live) and all(candidate)
    assert any(b != g for b, g in zip(live, candidate, strict=True)), live
    for case in reworded["report"]["cases"]:  # each side's max_tokens reached llama.cpp
        for side in ("blue", "green"):
            assert case[side]["tokens_reported"] and 0 < case[side]["output_tokens"] <= 24
    assert reworded["report"]["summary"]["schema_valid"] is None
    assert reworded["lint"]["errors"] == []

    # The live prompt, as a prompts:/ candidate: the same rendering and settings on both
    # sides, so (temperature 0) the same answers, and the live side's as before.
    itself = ok(
        validate(api, deployment="qa-chat", prompt_uri="prompts:/validate-live/1", cases=CASES)
    )
    assert itself["candidate"] == "prompts:/validate-live/1"
    assert outputs(itself, "blue") == outputs(itself, "green") == live
    assert all(case["exact_match"] for case in itself["report"]["cases"])


SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}
JSON_ASK = [
    {"role": "system", "content": 'Reply to {{audience}} with JSON only: {"answer": "..."}'},
    {"role": "user", "content": "{{question}}"},
]


def test_the_candidates_response_format_gives_its_schema_valid_rate(api: str) -> None:
    config = {"temperature": 0, "max_tokens": 48}
    result = ok(
        validate(
            api,
            deployment="qa-chat",
            messages=JSON_ASK,
            model_config=config,
            response_format=SCHEMA,
            cases=[*CASES, FOLLOW_UP],
        )
    )
    answers = outputs(result, "green")
    # llama.cpp was asked for the schema: sampling starts a JSON object.
    assert all(answer.lstrip().startswith("{") for answer in answers), answers
    schema = result["report"]["summary"]["schema_valid"]
    assert schema["blue"] is None  # the live prompt has no response_format
    green = schema["green"]
    ids = [case["id"] for case in result["report"]["cases"]]
    invalid = [i for i, answer in zip(ids, answers, strict=True) if not matches(answer)]
    assert green["checked"] == len(ids) and green["valid"] == len(ids) - len(invalid)
    assert green["invalid_cases"] == invalid
    for case in result["report"]["cases"]:
        assert case["green"]["schema_checked"] and not case["blue"]["schema_checked"]


def matches(answer: str) -> bool:
    try:
        jsonschema.validate(json.loads(answer), SCHEMA)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def test_a_chat_candidate_faces_a_live_text_prompt_without_client_messages(api: str) -> None:
    first = CASES[:1]  # the text side sets no max_tokens: one case keeps the test short
    result = ok(
        validate(api, deployment="qa-text", messages=LIVE, model_config=CONFIG, cases=first)
    )
    assert (result["live_kind"], result["candidate_kind"]) == ("text", "chat")
    assert all(outputs(result, "blue")) and all(outputs(result, "green"))

    refused = validate(api, deployment="qa-text", messages=LIVE, cases=[*CASES, FOLLOW_UP])
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "cases[3].messages"
    assert "prompts:/validate-text/1 is a text template" in refused.json()["message"]


BAD_CANDIDATES = [
    ({"template": "Say {{question}}", "messages": LIVE}, "messages", "exactly one of"),
    (
        {"messages": LIVE, "model_config": {"temprature": 0}},
        "model_config.temprature",
        "not a known setting",
    ),
    ({"messages": [{"role": "wizard", "content": "{{q}}"}]}, "messages[0].role", "use one of"),
    (
        {"messages": LIVE, "response_format": {"type": "objct"}},
        "response_format",
        "not a valid JSON schema",
    ),
    ({"template": "Say {{question}}", "model_config": CONFIG}, "model_config", "goes with"),
    (
        {"prompt_uri": "prompts:/validate-live/1", "response_format": SCHEMA},
        "response_format",
        "goes with messages",
    ),
]


@pytest.mark.parametrize(("candidate", "field", "words"), BAD_CANDIDATES)
def test_a_bad_candidate_is_a_422_naming_the_field(
    api: str, candidate: dict[str, Any], field: str, words: str
) -> None:
    refused = validate(api, deployment="qa-chat", cases=CASES, **candidate)
    assert refused.status_code == 422, refused.text
    error = refused.json()
    assert error["field"] == field and words in error["message"], error


def test_the_cli_sends_a_prompt_yaml_folder_and_reads_the_report(api: str, tmp_path: Path) -> None:
    folder = tmp_path / "answer"
    shutil.copytree(REPO / "prompts" / "answer", folder)
    meta = yaml.safe_load((folder / "prompt.yaml").read_text(encoding="utf-8"))
    meta["model_config"]["max_tokens"] = 32  # shorter answers, a shorter test
    (folder / "prompt.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")
    golden = (folder / "golden.jsonl").read_text(encoding="utf-8").splitlines()
    args = ["prompts", "validate", str(folder), "-d", "qa-chat", "--url", api, "--json"]
    run = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
    payload = json.loads(run.output)
    assert payload["candidate"] == "inline chat prompt" and payload["candidate_kind"] == "chat"
    report = payload["report"]
    assert [case["id"] for case in report["cases"]] == [json.loads(line)["id"] for line in golden]
    # The folder's response_format travelled: the candidate's answers were checked on it.
    assert report["summary"]["schema_valid"]["green"]["checked"] == len(golden)
    passed = report["verdict"]["passed"] and not payload["lint"]["errors"]
    assert run.exit_code == (0 if passed else 3), run.output
