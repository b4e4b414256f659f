"""A chat completion request to a slot, checked against the official ``openai`` SDK's types.

The body is OpenAI's chat completion body plus an optional top-level ``variables`` object
(the prompt's template variables; the SDK sends it with ``extra_body``). Refusals are
:class:`OpenAIRefusal`, answered in OpenAI's error shape
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

# Sent on to the LLM when the client gives them (the prompt's model_config wins; see
# bgserve/registry/bundle_model.py). The LLM model refuses what its engine cannot honour
# (bgserve/llm/llm_model.py: llama.cpp streams one choice and calls only a named tool).
CHAT_PARAMS = (
    "temperature",
    "max_tokens",
    "top_p",
    "stop",
    "seed",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
)


class OpenAIRefusal(Exception):
    """A request refused with an OpenAI-shaped error."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def payload(self) -> dict[str, Any]:
        """``{"error": {...}}`` as OpenAI answers it (checked by the SDK's ErrorObject)."""
        from openai.types.shared import ErrorObject

        kind = "invalid_request_error" if self.status < 500 else "server_error"
        error = ErrorObject(message=self.message, type=kind, param=self.param, code=self.code)
        return {"error": error.model_dump(include={"message", "type", "param", "code"})}


@dataclass(frozen=True)
class ChatCall:
    """What a slot needs from a chat completion request."""

    messages: list[dict[str, Any]]
    variables: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False


def prepare_types() -> None:
    """Import the ``openai`` SDK's types and build their validators now: the first import
    takes over a second (the whole ``openai.types`` package), which a slot pays before it
    says it is ready rather than in its first caller's time to first token. The answer
    types are built too (the SDK leaves them to their first validation)."""
    from openai.types import Model
    from openai.types.chat import ChatCompletion, ChatCompletionChunk
    from openai.types.shared import ErrorObject

    for answer_type in (ChatCompletion, ChatCompletionChunk, Model, ErrorObject):
        answer_type.model_rebuild()
    _adapters()
    _tools_adapter()


@cache
def _adapters() -> tuple[TypeAdapter[Any], TypeAdapter[Any]]:
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.chat.completion_create_params import CompletionCreateParamsBase

    return TypeAdapter(CompletionCreateParamsBase), TypeAdapter(ChatCompletionMessageParam)


@cache
def _tools_adapter() -> TypeAdapter[Any]:
    from openai.types.chat import ChatCompletionToolUnionParam

    return TypeAdapter(list[ChatCompletionToolUnionParam])


def _check_tools(raw: Any) -> None:
    """The request type takes any iterable and checks none of its items: check them."""
    if raw is None:
        return
    try:
        _tools_adapter().validate_python(raw)
    except ValidationError as exc:
        raise _refusal(exc, "tools") from None


def _refusal(exc: ValidationError, prefix: str = "") -> OpenAIRefusal:
    first = exc.errors()[0]
    param = ".".join(str(part) for part in (prefix, *first["loc"]) if part != "")
    return OpenAIRefusal(400, f"{param or 'body'}: {first['msg']}", param=param or None)


def _text_content(message: dict[str, Any]) -> dict[str, Any]:
    """The message with text parts joined into one string (what every chat template takes)."""
    content = message.get("content")
    if isinstance(content, list):
        texts = [part.get("text", "") for part in content if isinstance(part, dict)]
        return {**message, "content": "".join(texts)}
    return message


def _messages(raw: Any) -> list[dict[str, Any]]:
    _, message_adapter = _adapters()
    if not isinstance(raw, list):
        raise OpenAIRefusal(400, "messages must be an array of messages", param="messages")
    checked = []
    for index, message in enumerate(raw):
        try:
            message_adapter.validate_python(message)
        except ValidationError as exc:
            raise _refusal(exc, f"messages.{index}") from None
        checked.append(_text_content(message))
    return checked


def parse_chat(body: bytes, deployment: str) -> ChatCall:
    """Check a chat completion body sent to the slot serving ``deployment``.

    Raises:
        OpenAIRefusal: 400 naming the field (not JSON, a field of the wrong type, a bad
            message or tool, ``variables`` not an object); 404
            ``model_not_found`` when ``model`` is not the deployment's name.
    """
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise OpenAIRefusal(400, "the body is not JSON: send a chat completion object") from None
    if not isinstance(parsed, dict):
        raise OpenAIRefusal(400, "the body must be a JSON object")
    request_adapter, _ = _adapters()
    try:
        request_adapter.validate_python(parsed)
    except ValidationError as exc:
        raise _refusal(exc) from None
    if parsed["model"] != deployment:
        raise OpenAIRefusal(
            404,
            f"The model `{parsed['model']}` does not exist: this endpoint serves `{deployment}`",
            param="model",
            code="model_not_found",
        )
    variables = parsed.get("variables") or {}
    if not isinstance(variables, dict):
        raise OpenAIRefusal(400, "variables must be an object of template variables", "variables")
    _check_tools(parsed.get("tools"))
    params = {key: parsed[key] for key in CHAT_PARAMS if parsed.get(key) is not None}
    if "max_tokens" not in params and parsed.get("max_completion_tokens") is not None:
        params["max_tokens"] = parsed["max_completion_tokens"]
    options = parsed.get("stream_options") or {}
    return ChatCall(
        messages=_messages(parsed["messages"]),
        variables=variables,
        params=params,
        stream=bool(parsed.get("stream")),
        include_usage=bool(options.get("include_usage")),
    )
