"""The OpenAI-compatible side of the router: chat completion requests, the model list,
and a streamed answer assembled into one for a shadow pair.

Only these paths parse the request body (the OIP path never does): ``model`` names the
deployment, ``stream: true`` asks for server-sent events, ``user`` is a sticky key when
the sticky header is absent. Every error here is in OpenAI's shape
(:func:`openai_error_response`).
"""

from __future__ import annotations

import json
import json.scanner
from typing import Any, cast

import orjson

from bgserve.dataplane.http1 import REASONS, Request, json_response

CHAT_PATHS = (b"/openai/v1/chat/completions", b"/v1/chat/completions")
MODELS_PATHS = (b"/openai/v1/models", b"/v1/models")
SLOT_CHAT_PATH = b"/openai/v1/chat/completions"


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
}


def openai_error_response(
    status: int, message: str, keep: bool, *, param: str | None = None, code: str | None = None
) -> bytes:
    """An error in OpenAI's shape (``{"error": {"message", "type", "param", "code"}}``)
    with ``status``, ready to write: what the ``openai`` SDK reads from any endpoint."""
    kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    error = {"message": message, "type": kind, "param": param, "code": code}
    return json_response(status, REASONS[status], {"error": error}, keep)


class OpenAIError(Exception):
    """A request the router refuses, answered in OpenAI's error shape."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def response(self, keep: bool) -> bytes:
        """The error as a complete response."""
        return openai_error_response(
            self.status, self.message, keep, param=self.param, code=self.code
        )


ChatCall = tuple[bytes, bool, bytes | None]
"""What the router reads from a chat completion request: ``(model, stream, user)``.

A plain tuple: a NamedTuple's constructor is Python code, which a request arriving with
cold caches pays for (about 10 microseconds)."""


# The scanner json.loads runs (a default JSONDecoder's, the C one), called without
# json.loads's Python layers.
_SCAN = json.scanner.make_scanner(cast(Any, json.JSONDecoder()))  # typeshed's context type
_JSON_SPACE = " \t\n\r"


def json_loads(body: bytes) -> Any:
    """``json.loads(body)``: the same value, or the same exception, for every body, but
    that an integer past 64 bits may come back as a float (the router reads only
    strings and booleans from it).

    A request arriving after a pause finds the caches cold, and then json.loads's Python
    layers (encoding detection, decoding to text, the decoder object) cost tens of
    microseconds before the slot is even picked. orjson reads the bytes directly in
    about half that time; it is strict (UTF-8 only, no NaN, no lone surrogate), and
    whatever it refuses goes the json.loads way.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return _json_loads_slow(body)


def _json_loads_slow(body: bytes) -> Any:
    """json.loads, with a body that starts with ``{`` (one json.loads would read as
    UTF-8) sent straight to the scanner json.loads ends in."""
    if body[:1] == b"{" and body[1:2] != b"\x00":
        try:
            text = body.decode("utf-8", "surrogatepass")
            value, end = _SCAN(text, 0)
        except (ValueError, StopIteration):
            pass  # json.loads raises the same error, with its own message
        else:
            if end == len(text) or not text[end:].strip(_JSON_SPACE):
                return value
    return json.loads(body)


def chat_call(request: Request) -> ChatCall:
    """The routing fields of a chat completion request. Raises OpenAIError (400/405)."""
    if request.method != b"POST":
        raise OpenAIError(405, "chat completions are created with POST")
    try:
        body = json_loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OpenAIError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise OpenAIError(400, "the request body is nested too deep to read") from None
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        message = "'model' is required: the name of the bgserve deployment to call"
        raise OpenAIError(400, message, param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise OpenAIError(400, "'stream' must be true or false", param="stream")
    user = body.get("user")
    return (
        _utf8(model, "model"),
        stream,
        _utf8(user, "user") if isinstance(user, str) and user else None,
    )


def _utf8(text: str, param: str) -> bytes:
    """``text`` as UTF-8; OpenAIError (400) for a lone surrogate, which JSON can carry."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise OpenAIError(400, f"{param!r} is not valid Unicode text", param=param) from None


def unknown_model(model: bytes) -> OpenAIError:
    """The 404 of a model that names no deployment routed here."""
    name = model.decode(errors="replace")
    return OpenAIError(
        404,
        f"The model {name!r} does not exist: no deployment of that name is served here",
        param="model",
        code="model_not_found",
    )


def for_slot(request: Request, path: bytes) -> Request:
    """``request`` aimed at the slot's ``/openai/v1/chat/completions`` (the query kept)."""
    if path == SLOT_CHAT_PATH:
        return request
    head = request.upstream_head
    line_end = head.index(b"\r\n")
    target = SLOT_CHAT_PATH + request.target[len(path) :]
    first = b"%s %s HTTP/1.1" % (request.method, target)
    return Request(
        request.method,
        target,
        first + head[line_end:],
        request.body,
        request.keep_alive,
        request.http10,
    )


def models_response(deployments: list[str], keep: bool) -> bytes:
    """``GET /openai/v1/models``: the deployments routed here, in OpenAI's list shape."""
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "bgserve"}
        for name in sorted(deployments)
    ]
    return json_response(200, "OK", {"object": "list", "data": data}, keep)


def assembled(body: bytes) -> bytes:
    """A streamed chat completion (server-sent events) as the one ``chat.completion``
    JSON body the same answer would have had unstreamed; any other body as it is.

    For shadow pairs, off the router's loop. Tool calls are put together from their
    deltas (by index: id, type and name as sent, arguments joined), the message's
    ``content`` then None when no text came, as OpenAI answers a tool call. A stream cut
    short gives what arrived; an ``error`` event (a slot that failed mid-stream) is kept
    as the answer's ``error``.
    """
    if not body.lstrip().startswith(b"data:"):
        return body
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    answer: dict[str, Any] = {"object": "chat.completion"}
    finish: str | None = None
    for line in body.splitlines():
        if not line.startswith(b"data:"):
            continue
        event = _event(line[5:].strip())
        if event is None:
            continue
        for key in ("id", "model", "created", "usage", "error"):
            if event.get(key) is not None:
                answer[key] = event[key]
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta, dict):
                if isinstance(delta.get("content"), str):
                    text.append(delta["content"])
                _add_tool_calls(calls, delta.get("tool_calls"))
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
    if calls:
        message["content"] = message["content"] or None
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    answer["choices"] = [{"index": 0, "message": message, "finish_reason": finish}]
    return json.dumps(answer).encode()


def _add_tool_calls(calls: dict[int, dict[str, Any]], deltas: object) -> None:
    """Merge one event's ``delta.tool_calls`` into ``calls`` (by each call's index)."""
    if not isinstance(deltas, list):
        return
    for position, delta in enumerate(deltas):
        if not isinstance(delta, dict):
            continue
        index = delta.get("index", position)
        if not isinstance(index, int):
            continue
        call = calls.setdefault(index, {"function": {"arguments": ""}})
        for key in ("id", "type"):
            if isinstance(delta.get(key), str):
                call[key] = delta[key]
        function = delta.get("function")
        if isinstance(function, dict):
            if isinstance(function.get("name"), str):
                call["function"]["name"] = function["name"]
            if isinstance(function.get("arguments"), str):
                call["function"]["arguments"] += function["arguments"]


def _event(data: bytes) -> dict[str, Any] | None:
    if data == b"[DONE]":
        return None
    try:
        event = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) else None
