"""A golden comparison of two chat releases: prompts in a real MLflow store, a real store
and executor, and each slot a real HTTP server speaking the slot's OpenAI chat contract.

The chat route of the LLM slot is built elsewhere; ``ChatSlot`` below speaks exactly the
contract the comparison relies on: ``POST {endpoint}/openai/v1/chat/completions`` with
``{"model": <deployment>, "messages": [...client messages], "variables": {...}}``, the
prompt's rendered messages first, an OpenAI chat completion back (its OIP route answers
404 here, so any call that took it would be an error in the report).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bgserve.app.comparer import CompareOptions, Comparer, ComparerConfig
from bgserve.app.executor import Executor
from bgserve.backends.memory import MemoryBackend
from bgserve.domain import rollout
from bgserve.domain.release import ResolvedRelease
from bgserve.errors import InvalidInput
from bgserve.evaluation.chat_prompt import render_messages
from bgserve.evaluation.golden import parse_cases
from bgserve.registry.chat_prompts import push_chat_prompt
from bgserve.registry.mlflow_registry import MlflowRegistry
from bgserve.store import Store
from tests.support.json_handler import JsonHandler

pytestmark = pytest.mark.integration

DEPLOYMENT = "qa"
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "minLength": 1}},
    "required": ["answer"],
    "additionalProperties": False,
}
TERSE = [
    {"role": "system", "content": "You are terse. Answer for {{audience}} as JSON."},
    {"role": "user", "content": "{{question}}"},
]
PIRATE = [
    {"role": "system", "content": "You are a pirate. Answer for {{audience}} as JSON."},
    {"role": "user", "content": "{{question}}"},
]
CASES = parse_cases(
    [
        {"id": "capital", "inputs": {"question": "Capital of France?", "audience": "a child"}},
        {"id": "boil", "inputs": {"question": "Water boils at?", "audience": "a cook"}},
        {"id": "sky", "inputs": {"question": "Sky colour?", "audience": "a child"}},
        {
            "id": "follow-up",
            "inputs": {"question": "Legs of a spider?", "audience": "a student"},
            "messages": [
                {"role": "assistant", "content": '{"answer": "Eight."}'},
                {"role": "user", "content": "And an insect?"},
            ],
        },
    ]
)
Model = Callable[[list[dict[str, str]]], str]


@dataclass
class ChatSlot:
    """The slot servers' requests and the conversations their model saw, by release."""

    port: int = 0
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    seen: dict[int, list[list[dict[str, str]]]] = field(default_factory=dict)


def completion(model: str, content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 20,
            "completion_tokens": len(content.split()),
            "total_tokens": 0,
        },
    }


@pytest.fixture
def chat_slots(registry: MlflowRegistry) -> Iterator[tuple[ChatSlot, dict[int, Model]]]:
    """One server for both slots: ``/{release}/openai/v1/chat/completions``, each release
    rendering its own prompt version (read from MLflow) and asking ``models[release]``."""
    slot = ChatSlot()
    models: dict[int, Model] = {}

    class Handler(JsonHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            slot.requests.append((self.path, body))
            release, _, route = self.path.lstrip("/").partition("/")
            if route != "openai/v1/chat/completions":
                return self.send_json(404, {"error": {"message": f"no route {route}"}})
            if body.get("model") != DEPLOYMENT:
                return self.send_json(404, {"error": {"message": "unknown model", "code": 404}})
            spec = registry.get_prompt_spec("qa", int(release))
            conversation = [
                *render_messages(spec.messages or (), body["variables"]),
                *body["messages"],
            ]
            slot.seen.setdefault(int(release), []).append(conversation)
            answer = models[int(release)](conversation)
            return self.send_json(200, completion(DEPLOYMENT, answer))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    slot.port = int(server.server_address[1])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield slot, models
    finally:
        server.shutdown()
        server.server_close()


def json_answer(conversation: list[dict[str, str]]) -> str:
    return json.dumps({"answer": conversation[-1]["content"]})


def spider_in_prose(conversation: list[dict[str, str]]) -> str:
    """Like ``json_answer``, but prose (not schema-valid) when a spider is involved."""
    if any("spider" in m["content"] for m in conversation):
        return "Arr, six legs on an insect, matey."
    return json_answer(conversation)


@pytest.fixture
def registry(tmp_path: Path) -> MlflowRegistry:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    registry = MlflowRegistry(store, store)
    config = {"temperature": 0, "max_tokens": 32}
    for messages in (TERSE, PIRATE):
        push_chat_prompt(registry, "qa", messages, model_config=config, response_format=SCHEMA)
    registry.push_prompt("plain", "Answer: {{question}}")
    return registry


@pytest.fixture
def comparer(
    tmp_path: Path, registry: MlflowRegistry, chat_slots: tuple[ChatSlot, dict[int, Model]]
) -> Iterator[Comparer]:
    slot, _ = chat_slots
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    now = datetime.now(UTC)
    for n in (1, 2):
        resolved = ResolvedRelease("llm", 1, "qa", n, "bundle", n)
        store.add_release(f"r{n}", resolved, "models:/llm/1", f"prompts:/qa/{n}", now)
    store.add_release(
        "r3", ResolvedRelease("llm", 1, "plain", 1, "bundle", 3), "models:/llm/1",
        "prompts:/plain/1", now,
    )  # fmt: skip
    backend = MemoryBackend(slot_endpoint=f"http://127.0.0.1:{slot.port}/{{release_id}}")
    executor = Executor(store, backend, registry, clock=lambda: datetime.now(UTC), lock_timeout=5)
    executor.create(rollout.create(DEPLOYMENT, 1), "alice")
    executor.run(DEPLOYMENT, "alice", lambda s: rollout.stage_green(s, 2))
    settings = ComparerConfig(
        concurrency=4, timeout_seconds=10, thresholds={}, scorer="text", warmup_calls=1,
        latency_repeats=1,
    )  # fmt: skip
    yield Comparer(settings, store, store, registry, backend, executor, prompts=registry)
    store.close()


LENIENT = {"min_mean_similarity": 0.0, "min_agreement_rate": 0.0, "max_latency_ratio_p50": 100}


def test_two_chat_releases_are_compared_on_the_openai_route_and_the_schema_gates(
    comparer: Comparer, chat_slots: tuple[ChatSlot, dict[int, Model]]
) -> None:
    slot, models = chat_slots
    models.update({1: json_answer, 2: spider_in_prose})
    _, report = comparer.compare(
        DEPLOYMENT, CASES, "alice", options=CompareOptions(thresholds=LENIENT)
    )
    assert {path for path, _ in slot.requests} == {
        f"/{n}/openai/v1/chat/completions" for n in (1, 2)
    }
    for _, body in slot.requests:
        assert body["model"] == DEPLOYMENT and set(body) == {"model", "messages", "variables"}
    # The prompt's rendered messages first, then the case's own.
    follow_up = next(c for c in slot.seen[2] if c[-1]["content"] == "And an insect?")
    assert follow_up[0] == {
        "role": "system",
        "content": "You are a pirate. Answer for a student as JSON.",
    }
    assert follow_up[1:] == [
        {"role": "user", "content": "Legs of a spider?"},
        {"role": "assistant", "content": '{"answer": "Eight."}'},
        {"role": "user", "content": "And an insect?"},
    ]
    case = {c.id: c for c in report.cases}
    assert case["capital"].blue.output == '{"answer": "Capital of France?"}'
    assert case["capital"].blue.tokens_reported  # usage.completion_tokens was read

    schema = report.summary.schema_valid
    assert schema is not None and schema.blue is not None and schema.green is not None
    assert (schema.blue.valid, schema.blue.checked) == (4, 4)
    assert (schema.green.valid, schema.green.checked) == (3, 4)
    assert schema.green.invalid_cases == ["follow-up"]
    assert not report.verdict.passed
    assert any("3 of 4 of green's answers match" in r for r in report.verdict.reasons)
    assert any("response_format" in p for p in case["follow-up"].problems)

    lowered = {**LENIENT, "min_schema_valid_rate": 0.75}
    _, report = comparer.compare(
        DEPLOYMENT, CASES, "alice", options=CompareOptions(thresholds=lowered)
    )
    assert report.verdict.passed, report.verdict.reasons


def test_a_case_with_messages_against_a_text_release_is_refused_naming_the_case(
    comparer: Comparer, chat_slots: tuple[ChatSlot, dict[int, Model]]
) -> None:
    slot, _ = chat_slots
    comparer.executor.run(DEPLOYMENT, "alice", lambda s: rollout.stage_green(s, 3))
    with pytest.raises(InvalidInput) as caught:
        comparer.compare(DEPLOYMENT, CASES, "alice")
    assert caught.value.field == "cases[3].messages"
    assert "'follow-up'" in caught.value.message and "prompts:/plain/1" in caught.value.message
    assert slot.requests == []
