"""SageMaker's container contract on a slot: ``serve`` with the model's environment
becomes the slot, ``/ping`` its readiness, ``/invocations`` its infer or chat route."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bgserve.slot.sagemaker import MAX_PAYLOAD, SageMakerContract, is_chat_body, slot_argv


def test_the_models_environment_names_the_slot_serve_runs() -> None:
    env = {
        "BGSERVE_SLOT_MODEL_URI": "/opt/ml/model",
        "BGSERVE_SLOT_DEPLOYMENT": "chat",
        "BGSERVE_SLOT_RELEASE_ID": "7",
    }
    argv = slot_argv(env)
    assert argv is not None
    assert argv[:6] == ["--model-uri", "/opt/ml/model", "--deployment", "chat", "--release-id", "7"]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"  # SageMaker calls from outside
    assert argv[argv.index("--port") + 1] == "8080" and "--sagemaker" in argv
    assert slot_argv({}) is None  # no slot named: `serve` stays the control plane


def test_serve_with_a_models_environment_runs_the_slot_not_the_control_plane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SageMaker starts the image as ``bgserve serve``: the model's environment makes that
    the slot (the control plane would answer SageMaker's health check with a 404)."""
    from typer.testing import CliRunner

    from bgserve.cli.app import app

    started: list[list[str]] = []
    monkeypatch.setattr("bgserve.slot.server.main", started.append)
    env = {"BGSERVE_SLOT_MODEL_URI": "/opt/ml/model", "BGSERVE_SLOT_DEPLOYMENT": "chat"}
    result = CliRunner().invoke(app, ["serve"], env=env)
    assert result.exit_code == 0, result.output
    (argv,) = started
    assert argv[:4] == ["--model-uri", "/opt/ml/model", "--deployment", "chat"]
    assert "--sagemaker" in argv


def test_only_a_json_object_with_messages_is_a_chat_call() -> None:
    assert is_chat_body(b'{"messages": [], "model": "chat"}')
    assert not is_chat_body(b'{"inputs": []}')
    assert not is_chat_body(b'["messages"]')
    assert not is_chat_body(b"\xff not json")


def call(
    app: SageMakerContract, method: str, path: str, body: bytes = b"", length: int | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One request through the middleware: the scope the inner app saw, and what was sent."""
    seen: dict[str, Any] = {}
    sent: list[dict[str, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        seen.update(scope, body=message.get("body", b""))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    app.app = inner
    size = len(body) if length is None else length
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "headers": [(b"content-length", str(size).encode())]}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return seen, sent


def test_ping_and_invocations_reach_the_slots_own_routes() -> None:
    app = SageMakerContract(lambda *a: None, deployment="chat", chat=True)  # type: ignore[arg-type]
    seen, _ = call(app, "GET", "/ping")
    assert seen["path"] == "/v2/models/chat/ready"
    chat = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    seen, _ = call(app, "POST", "/invocations", chat)
    assert seen["path"] == "/openai/v1/chat/completions" and seen["body"] == chat
    seen, _ = call(app, "POST", "/invocations", b'{"inputs": []}')
    assert seen["path"] == "/v2/models/chat/infer" and seen["raw_path"] == b"/v2/models/chat/infer"
    seen, _ = call(app, "POST", "/v2/models/chat/infer", b"{}")
    assert seen["path"] == "/v2/models/chat/infer"  # the slot's own routes pass through


def test_a_chat_body_to_a_text_release_goes_to_infer_which_explains() -> None:
    app = SageMakerContract(lambda *a: None, deployment="sum", chat=False)  # type: ignore[arg-type]
    seen, _ = call(app, "POST", "/invocations", b'{"messages": []}')
    assert seen["path"] == "/v2/models/sum/infer"


def test_a_payload_over_sagemakers_limit_is_refused_before_it_is_read() -> None:
    app = SageMakerContract(lambda *a: None, deployment="chat", chat=True)  # type: ignore[arg-type]
    seen, sent = call(app, "POST", "/invocations", b"{}", length=MAX_PAYLOAD + 1)
    assert seen == {} and sent[0]["status"] == 413
    assert b"limit" in sent[1]["body"]
