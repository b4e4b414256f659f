"""Slots serving chat prompt releases on SmolLM2 (llama.cpp in the slot process, and an
OpenAI-compatible endpoint: llama.cpp's own server), called with the official ``openai``
SDK; the prompt's model_config and response_format reach the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import mlflow
import openai
import pytest

from bgserve.llm.safety import library_key
from bgserve.llm.smollm2 import smollm2_path
from bgserve.registry.llm_models import LlmSpec, register_llm
from bgserve.registry.mlflow_registry import MlflowRegistry
from tests.support.models import SlotProcess, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY_ENV = "BGSERVE_TEST_LLM_KEY"
KEY = "sk-test-llama-server-key"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "colour": {"type": "string"}},
    "required": ["name", "colour"],
}
MESSAGES = [
    {"role": "system", "content": "You are a {{style}} assistant. Answer in one sentence."},
    {"role": "user", "content": "{{question}}"},
]
VARIABLES = {"style": "friendly", "question": "Describe the sea."}


@dataclass(frozen=True)
class Slots:
    pinned: SlotProcess  # model_config: temperature 0, max_tokens 3
    open: SlotProcess  # no model_config: the client's values apply
    json: SlotProcess  # response_format: a JSON schema
    endpoint: SlotProcess  # base model: llama.cpp's OpenAI server, reached with a key


def sdk(slot: SlotProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=slot.url + "/openai/v1", api_key="x", max_retries=0)


def push(registry: MlflowRegistry, name: str, template: Any, **extra: Any) -> str:
    with registry.uris():
        version = mlflow.genai.register_prompt(name=name, template=template, **extra).version
    return f"prompts:/{name}/{version}"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's own OpenAI-compatible server on SmolLM2, wanting a key; its base URL."""
    port = free_port()
    log = (tmp_path_factory.mktemp("llama-server") / "server.log").open("wb")
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path())]
    command += ["--model_alias", "smollm2", "--port", str(port), "--api_key", KEY]
    command += ["--n_ctx", "2048", "--n_threads", "1", "--verbose", "False"]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"

    def up() -> bool:
        assert proc.poll() is None, "llama.cpp's server exited"
        try:
            headers = {"Authorization": f"Bearer {KEY}"}
            return httpx.get(f"{url}/models", headers=headers, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, 90, "llama.cpp's server")
        yield url
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


@pytest.fixture(scope="module")
def slots(
    mlflow_store: str, llama_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Slots]:
    root = tmp_path_factory.mktemp("llm-slots")
    registry = MlflowRegistry(mlflow_store, mlflow_store, artifact_location=str(root / "art"))
    smol = register_llm(registry, LlmSpec("smollm2", gguf=smollm2_path())).model_uri
    remote = LlmSpec("smollm2-remote", None, llama_server, "smollm2", KEY_ENV)
    endpoint = register_llm(registry, remote).model_uri
    pinned = push(registry, "pinned", MESSAGES, model_config={"temperature": 0, "max_tokens": 3})
    free = push(registry, "free", MESSAGES)
    shaped = [
        {"role": "system", "content": "Reply with JSON only."},
        {"role": "user", "content": "Invent a {{thing}} with a name and a colour."},
    ]
    schema = push(
        registry, "shaped", shaped, model_config={"temperature": 0}, response_format=SCHEMA
    )
    releases = {
        "pinned": registry.register_release("pinned", smol, pinned),
        "open": registry.register_release("open", smol, free),
        "json": registry.register_release("json", smol, schema),
        "endpoint": registry.register_release("endpoint", endpoint, free),
    }
    os.environ[KEY_ENV] = KEY  # inherited by the slot processes, never stored
    started = [
        SlotProcess(f"models:/{r.bundle_name}/{r.bundle_version}", name, 1, root / f"{name}.log")
        for name, r in releases.items()
    ]
    try:
        for slot in started:
            slot.wait_ready(180)
        yield Slots(*started)
    finally:
        for slot in started:
            slot.stop()
        os.environ.pop(KEY_ENV, None)


def test_the_sdk_gets_a_chat_completion_under_the_deployment_name(slots: Slots) -> None:
    answer = sdk(slots.open).chat.completions.create(
        model="open",
        messages=[{"role": "user", "content": "And the sky?"}],
        max_tokens=20,
        extra_body={"variables": VARIABLES},
    )
    assert answer.model == "open" and answer.object == "chat.completion"
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content
    assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 20
    models = sdk(slots.open).models.list()
    assert [m.id for m in models.data] == ["open"]


def test_a_streamed_answer_arrives_in_chunks_with_usage_last(slots: Slots) -> None:
    stream = sdk(slots.open).chat.completions.create(
        model="open",
        messages=[],
        max_tokens=16,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"variables": VARIABLES},
    )
    chunks = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 2, chunks  # token by token, not one buffered answer
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(texts)
    whole = sdk(slots.open).chat.completions.create(
        model="open", messages=[], max_tokens=16, temperature=0, extra_body={"variables": VARIABLES}
    )
    assert "".join(texts) == whole.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens  # type: ignore[union-attr]


def test_the_prompts_max_tokens_and_temperature_win_over_the_request(slots: Slots) -> None:
    answers = [
        sdk(slots.pinned).chat.completions.create(
            model="pinned",
            messages=[],
            max_tokens=200,
            temperature=1.9,
            seed=seed,
            extra_body={"variables": VARIABLES},
        )
        for seed in (1, 2, 3)
    ]
    for answer in answers:
        assert answer.usage is not None and answer.usage.completion_tokens <= 3
        assert answer.choices[0].finish_reason == "length"
    assert len({a.choices[0].message.content for a in answers}) == 1  # temperature 0 held


def test_the_requests_temperature_applies_where_the_prompt_sets_none(slots: Slots) -> None:
    def ask(temperature: float, seed: int) -> str:
        answer = sdk(slots.open).chat.completions.create(
            model="open",
            messages=[],
            max_tokens=24,
            temperature=temperature,
            seed=seed,
            extra_body={"variables": VARIABLES},
        )
        return answer.choices[0].message.content or ""

    assert len({ask(0.0, seed) for seed in (1, 2)}) == 1
    assert len({ask(1.9, seed) for seed in (1, 2, 3)}) > 1


def test_the_prompts_response_format_gives_schema_valid_json(slots: Slots) -> None:
    answer = sdk(slots.json).chat.completions.create(
        model="json", messages=[], max_tokens=80, extra_body={"variables": {"thing": "bird"}}
    )
    jsonschema.validate(json.loads(answer.choices[0].message.content or ""), SCHEMA)


def test_oip_v2_infer_answers_the_assistant_text_on_the_same_slot(slots: Slots) -> None:
    inputs = [
        {"name": name, "datatype": "BYTES", "shape": [1], "data": [value]}
        for name, value in VARIABLES.items()
    ]
    response = httpx.post(
        f"{slots.pinned.url}/v2/models/pinned/infer", json={"inputs": inputs}, timeout=60
    )
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    direct = sdk(slots.pinned).chat.completions.create(
        model="pinned", messages=[], extra_body={"variables": VARIABLES}
    )
    assert output["data"] == [direct.choices[0].message.content]


def test_errors_come_in_openais_shape(slots: Slots) -> None:
    client = sdk(slots.open)
    with pytest.raises(openai.NotFoundError) as wrong_model:
        client.chat.completions.create(model="other", messages=[], extra_body={"variables": {}})
    error = wrong_model.value.body
    assert isinstance(error, dict)
    assert error["code"] == "model_not_found" and error["param"] == "model"
    with pytest.raises(openai.BadRequestError) as missing:
        client.chat.completions.create(model="open", messages=[], extra_body={"variables": {}})
    assert isinstance(missing.value.body, dict) and missing.value.body["param"] == "variables"
    assert "'style'" in missing.value.body["message"]
    bad = httpx.post(
        f"{slots.open.url}/openai/v1/chat/completions",
        json={"model": "open", "messages": [{"role": "wizard", "content": "hi"}]},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"].startswith("messages.0")


def test_an_endpoint_model_answers_and_streams_through_its_key(slots: Slots) -> None:
    client = sdk(slots.endpoint)
    answer = client.chat.completions.create(
        model="endpoint", messages=[], max_tokens=12, extra_body={"variables": VARIABLES}
    )
    assert answer.model == "endpoint" and answer.choices[0].message.content
    stream = client.chat.completions.create(
        model="endpoint",
        messages=[],
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"variables": VARIABLES},
    )
    chunks = list(stream)
    produced = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert produced >= 2
    # llama.cpp's server streams no usage: the slot counts the content chunks it relayed.
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == produced <= 12


def test_a_slot_refuses_to_start_on_a_llama_build_that_crashed(
    mlflow_store: str, slots: Slots, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    (cache / "bgserve").mkdir(parents=True)
    (cache / "bgserve" / "llama-check.json").write_text(
        json.dumps({library_key(): "signal SIGSEGV"})
    )
    saved = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        slot = SlotProcess("models:/bgserve.pinned/1", "pinned", 1, tmp_path / "slot.log")
    finally:
        os.environ.pop("XDG_CACHE_HOME") if saved is None else os.environ.update(
            XDG_CACHE_HOME=saved
        )
    try:
        assert slot.proc.wait(180) != 0
    finally:
        slot.stop()
    log = slot.log_path.read_text()
    assert "crashes at its first evaluation (signal SIGSEGV)" in log
    assert "-DGGML_NATIVE=OFF" in log
