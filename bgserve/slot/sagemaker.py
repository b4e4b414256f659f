"""SageMaker's container contract on a slot: ``GET /ping`` and ``POST /invocations``.

SageMaker runs a model's image with the argument ``serve`` and sends everything to port
8080: health checks to ``/ping``, every call to ``/invocations`` (one path, whatever the
call). :class:`SageMakerContract` maps both onto the slot's own routes: ``/ping`` is the
model's readiness, and an invocation whose JSON body has ``messages`` is a chat completion
(the OpenAI route, for a chat release), any other body an OIP v2 infer call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from bgserve.slot.infer_body import Asgi, Receive, Scope, Send, read_body, replay_body, send_json

# SageMaker's own limit for a real-time invocation's payload.
MAX_PAYLOAD = 6 * 1024 * 1024
TOO_LARGE = f"the payload is over SageMaker's limit of {MAX_PAYLOAD} bytes"
# The model's container environment names the slot to run (the backend writes them).
MODEL_URI_ENV = "BGSERVE_SLOT_MODEL_URI"
DEPLOYMENT_ENV = "BGSERVE_SLOT_DEPLOYMENT"
RELEASE_ID_ENV = "BGSERVE_SLOT_RELEASE_ID"
PORT = 8080  # the one port SageMaker sends to


def slot_argv(environ: Mapping[str, str]) -> list[str] | None:
    """The ``bgserve slot`` arguments SageMaker's ``serve`` stands for, from the model's
    container environment; None when the environment names no slot (a control plane)."""
    model_uri = environ.get(MODEL_URI_ENV)
    if not model_uri:
        return None
    return [
        "--model-uri",
        model_uri,
        "--deployment",
        environ.get(DEPLOYMENT_ENV, ""),
        "--release-id",
        environ.get(RELEASE_ID_ENV, "0"),
        "--host",
        "0.0.0.0",  # SageMaker's health checks and calls come from outside the container
        "--port",
        str(PORT),
        "--sagemaker",
    ]


def is_chat_body(body: bytes) -> bool:
    """Whether ``body`` is an OpenAI chat completion request (a JSON object with
    ``messages``); anything else goes to OIP infer, which says what is wrong with it."""
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(parsed, dict) and "messages" in parsed


class SageMakerContract:
    """ASGI middleware: ``/ping`` and ``/invocations`` onto the slot's readiness, infer
    and chat routes (see the module docstring). Other paths pass through unchanged."""

    def __init__(self, app: Asgi, deployment: str, chat: bool) -> None:
        self.app = app
        self.ready_path = f"/v2/models/{deployment}/ready"
        self.infer_path = f"/v2/models/{deployment}/infer"
        self.chat = chat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == "/ping" and method == "GET":
            await self.app(_at(scope, self.ready_path), receive, send)
        elif path == "/invocations" and method == "POST":
            await self._invoke(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _invoke(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = dict(scope["headers"]).get(b"content-length", b"0")
        too_large = length.isdigit() and int(length) > MAX_PAYLOAD
        body = None if too_large else await read_body(receive, MAX_PAYLOAD)
        if body is None:
            await send_json(send, 413, {"error": TOO_LARGE})
            return
        chat = self.chat and is_chat_body(body)
        target = "/openai/v1/chat/completions" if chat else self.infer_path
        await self.app(_at(scope, target), replay_body(body, receive), send)


def _at(scope: Scope, path: str) -> Scope:
    return {**scope, "path": path, "raw_path": path.encode()}
