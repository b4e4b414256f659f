"""Slots serving chat prompt releases on SmolLM2 (llama.cpp in the slot process, and an
OpenAI-compatible endpoint: llama.cpp's own server), called with the official ``openai``
SDK; the prompt's model_config and response_format reach the model, and so do ``n`` and
tools, or they are refused where llama.cpp cannot honour them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import mlflow
import openai
import pytest
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionNamedToolChoiceParam,
)

from bgserve.llm.safety import library_key
from bgserve.llm.smollm2 import smollm2_path
from bgserve.registry.llm_models import LlmSpec, register_llm
from bgserve.registry.mlflow_registry import MlflowRegistry
from tests.support.json_handler import JsonHandler
from tests.support.models import SlotProcess, wait_until
from tests.support.processes import free_port

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
    recorded: SlotProcess  # the same server behind a recorder of what it is sent


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


@dataclass
class Recorder:
    """A pass-through to llama.cpp's server (non-streamed calls) keeping each request
    body and answer as they crossed."""

    url: str = ""
    bodies: list[dict[str, Any]] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def recorder(llama_server: str) -> Iterator[Recorder]:
    recorded = Recorder()

    class Handler(JsonHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            recorded.bodies.append(body)
            headers = {"Authorization": self.headers.get("authorization", "")}
            upstream = httpx.post(
                f"{llama_server}/chat/completions", json=body, headers=headers, timeout=300
            )
            recorded.answers.append(upstream.json())
            self.send_json(upstream.status_code, upstream.json())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorded.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield recorded
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def slots(
    mlflow_store: str,
    llama_server: str,
    recorder: Recorder,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Slots]:
    root = tmp_path_factory.mktemp("llm-slots")
    registry = MlflowRegistry(mlflow_store, mlflow_store, artifact_location=str(root / "art"))
    smol = register_llm(registry, LlmSpec("smollm2", gguf=smollm2_path())).model_uri
    remote = LlmSpec("smollm2-remote", None, llama_server, "smollm2", KEY_ENV)
    endpoint = register_llm(registry, remote).model_uri
    via = LlmSpec("smollm2-recorded", None, recorder.url, "smollm2", KEY_ENV)
    recorded = register_llm(registry, via).model_uri
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
        "recorded": registry.register_release("recorded", recorded, free),
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


WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CALL_WEATHER: ChatCompletionNamedToolChoiceParam = {
    "type": "function",
    "function": {"name": "get_weather"},
}
ASK_WEATHER = {"style": "helpful", "question": "What is the weather in Paris?"}


def test_a_gguf_model_answers_n_choices_each_one_seed_further(slots: Slots) -> None:
    def ask(n: int, seed: int) -> Any:
        return sdk(slots.open).chat.completions.create(
            model="open",
            messages=[],
            n=n,
            max_tokens=12,
            temperature=1.2,
            seed=seed,
            extra_body={"variables": VARIABLES},
        )

    both = ask(2, seed=40)
    first, second = ask(1, seed=40), ask(1, seed=41)
    assert [c.index for c in both.choices] == [0, 1]
    assert [c.message.content for c in both.choices] == [
        first.choices[0].message.content,
        second.choices[0].message.content,
    ]
    assert both.usage is not None and first.usage is not None and second.usage is not None
    assert both.usage.prompt_tokens == first.usage.prompt_tokens  # one prompt
    spent = first.usage.completion_tokens + second.usage.completion_tokens
    assert both.usage.completion_tokens == spent
    assert both.usage.total_tokens == both.usage.prompt_tokens + spent


def test_a_gguf_model_calls_a_named_tool_with_arguments_of_its_schema(slots: Slots) -> None:
    answer = sdk(slots.open).chat.completions.create(
        model="open",
        messages=[],
        tools=[WEATHER],
        tool_choice=CALL_WEATHER,
        max_tokens=40,
        temperature=0,
        extra_body={"variables": ASK_WEATHER},
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    (call,) = choice.message.tool_calls
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])


@pytest.mark.parametrize(
    ("request_fields", "param", "why"),
    [
        ({"n": 2, "stream": True}, "n", "one after another"),
        ({"n": 17}, "n", "from 1 to 16"),
        ({"tools": [WEATHER]}, "tool_choice", "picks no tool itself"),
        ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice", "picks no tool itself"),
        (
            {"tools": [WEATHER], "tool_choice": CALL_WEATHER, "stream": True},
            "tools",
            "cannot be streamed",
        ),
        ({"tool_choice": CALL_WEATHER}, "tool_choice", "needs tools"),
    ],
)
def test_a_gguf_model_refuses_what_llama_cpp_cannot_honour_naming_the_parameter(
    slots: Slots, request_fields: dict[str, Any], param: str, why: str
) -> None:
    body = {"model": "open", "messages": [], "variables": ASK_WEATHER, **request_fields}
    refused = httpx.post(f"{slots.open.url}/openai/v1/chat/completions", json=body, timeout=60)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert why in error["message"], error


def test_an_endpoint_gets_n_and_tools_unchanged_and_its_tool_call_comes_back(
    slots: Slots, recorder: Recorder
) -> None:
    answer = sdk(slots.recorded).chat.completions.create(
        model="recorded",
        messages=[],
        n=2,
        tools=[WEATHER],
        tool_choice=CALL_WEATHER,
        parallel_tool_calls=False,
        max_tokens=40,
        extra_body={"variables": ASK_WEATHER},
    )
    sent = recorder.bodies[-1]
    assert (sent["n"], sent["tools"], sent["tool_choice"]) == (2, [WEATHER], CALL_WEATHER)
    assert sent["parallel_tool_calls"] is False and sent["model"] == "smollm2"
    # llama.cpp's server answers one choice whatever n is: the slot relays what it got.
    relayed = recorder.answers[-1]
    assert len(answer.choices) == len(relayed["choices"])
    (call,) = answer.choices[0].message.tool_calls or []
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert call.function.name == "get_weather"
    expected = relayed["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert call.function.arguments == expected


def test_an_endpoints_streamed_tool_call_arrives_in_deltas_and_is_counted(slots: Slots) -> None:
    stream = sdk(slots.endpoint).chat.completions.create(
        model="endpoint",
        messages=[],
        tools=[WEATHER],
        tool_choice=CALL_WEATHER,
        max_tokens=40,
        temperature=0,  # sampled arguments held a raw newline one run in a few
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"variables": ASK_WEATHER},
    )
    chunks = list(stream)
    parts = [
        c.choices[0].delta.tool_calls[0].function
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    ]
    assert parts and parts[0] is not None and parts[0].name == "get_weather"
    arguments = "".join(part.arguments or "" for part in parts if part is not None)
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])
    # llama.cpp's server streams no usage: the slot counts the chunks that carried output.
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == len(parts)


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


def stream_body(max_tokens: int, **extra: Any) -> dict[str, Any]:
    """A streamed chat completion body for the ``open`` slot."""
    return {
        "model": "open",
        "messages": [],
        "stream": True,
        "max_tokens": max_tokens,
        "variables": VARIABLES,
        **extra,
    }


@contextmanager
def open_stream(slot: SlotProcess, body: dict[str, Any]) -> Iterator[httpx.Response]:
    """``body`` streamed from ``slot``: its 200 response, open."""
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", slot.url + "/openai/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        yield response


def test_a_stream_the_client_leaves_frees_the_model_for_the_next_call(slots: Slots) -> None:
    # The generation holds the model's lock between its chunks; a client that goes away
    # mid-stream must not leave it held until a garbage collection (a frozen-GC slot
    # would then answer nobody).
    for _ in range(3):
        with open_stream(slots.open, stream_body(400)) as response:
            next(response.iter_lines())  # the first event, then the client hangs up
    started = time.monotonic()
    answer = (
        sdk(slots.open)
        .with_options(timeout=60)
        .chat.completions.create(
            model="open", messages=[], max_tokens=3, extra_body={"variables": VARIABLES}
        )
    )
    took = time.monotonic() - started
    assert answer.choices[0].message.content
    # 3 abandoned generations of up to 400 tokens each would take far longer than this.
    assert took < 20, f"the next call waited {took:.1f} s for the model"


def test_a_gguf_slots_calls_take_turns_and_each_says_how_long_it_waited(slots: Slots) -> None:
    # Two streams at once on a model that makes one generation at a time: the second
    # waits for the first to end, and says so (the data plane leaves that wait out of
    # the time to first token); an endpoint model takes no turns and says nothing.
    def stream() -> tuple[float, float]:
        """(the queue wait the slot reported, seconds to the whole answer)."""
        started = time.monotonic()
        with open_stream(slots.open, stream_body(40, temperature=0)) as response:
            waited = float(response.headers["x-bgserve-queue-ms"]) / 1000
            for _ in response.iter_lines():
                pass
        return waited, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = sorted(pool.map(lambda _: stream(), range(2)))
    assert first[0] < 0.5  # found the model free
    # The one that waited, waited for (most of) the other's whole answer.
    assert second[0] >= 0.8 * first[1] - 0.5, (first, second)
    answer = httpx.post(
        slots.endpoint.url + "/openai/v1/chat/completions",
        json={"model": "endpoint", "messages": [], "max_tokens": 2, "variables": VARIABLES},
        timeout=60,
    )
    assert answer.status_code == 200 and "x-bgserve-queue-ms" not in answer.headers
