"""The bodies of a mirrored pair, read for scoring: OIP v2 infer exchanges and OpenAI chat
completions alike.

The data plane pairs the request body with blue's and green's answers as they came, a
streamed chat completion assembled into one ``chat.completion`` JSON body
(:func:`bgserve.dataplane.openai_api.assembled`). An OIP request's inputs are its BYTES
tensors by name; a chat request's are its ``variables`` plus the client's ``messages``
rendered as ``role: content`` lines (under the key ``messages``). An OIP answer's text is
its ``output`` tensor, a chat answer's ``choices[0].message.content``. An answer in
OpenAI's error shape (``{"error": {...}}``, also as the last event of a stream) is the
slot's error. Nothing here raises on a malformed body: live traffic is not ours to trust.
"""

from __future__ import annotations

import json
from typing import Any

from bgserve.app.slot_calls import output_text
from bgserve.backends.base import ShadowPair
from bgserve.domain.shadow import PairInput

MESSAGES_KEY = "messages"
"""The inputs key under which a chat request's messages are shown."""


class ErrorAnswer(ValueError):
    """An answer in OpenAI's error shape; the message is the error's."""


def parse_pair(pair: ShadowPair) -> PairInput | None:
    """The pair with both answers read; None when blue's cannot be read (nothing to compare
    with). An unreadable green answer, or one in OpenAI's error shape, counts as green's
    error."""
    try:
        blue = answer_text(pair.blue_body)
    except ValueError:
        return None
    green, error = None, pair.green_error
    if error is None and pair.green_body is not None:
        try:
            green = answer_text(pair.green_body)
        except ErrorAnswer as exc:
            error = f"green answered an error: {exc}"
        except ValueError as exc:
            error = f"green's answer is unreadable: {exc}"
    elif error is None:
        error = "green gave no answer"
    return PairInput(
        pair.request_id,
        parse_inputs(pair.request_body),
        blue,
        green,
        error,
        pair.blue_ms,
        pair.green_ms if green is not None else None,
    )


def parse_inputs(body: str) -> dict[str, str] | None:
    """The inputs of an OIP v2 or chat completion request body, or None if it is neither
    (or was cut short)."""
    try:
        parsed = _json(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    if "messages" in parsed or "variables" in parsed:
        return _chat_inputs(parsed)
    try:
        return {str(t["name"]): str(t["data"][0]) for t in parsed["inputs"]}
    except (AttributeError, TypeError, KeyError, IndexError):
        return None


def answer_text(body: str) -> str:
    """The text of an OIP v2 answer or a chat completion. Raises ErrorAnswer for a body in
    OpenAI's error shape, ValueError for any other it cannot read."""
    parsed = _json(body)
    if isinstance(parsed, dict) and "error" in parsed:
        raise ErrorAnswer(_error_message(parsed["error"]))
    if isinstance(parsed, dict) and "choices" in parsed:
        return _chat_text(parsed["choices"])
    return output_text(parsed)


def _json(body: str) -> object:
    """The parsed body. Raises ValueError (also for nesting too deep to parse)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("the body nests too deeply to read") from None


def _chat_inputs(request: dict[str, Any]) -> dict[str, str] | None:
    variables = request.get("variables") or {}
    messages = request.get("messages")
    if not isinstance(variables, dict) or (messages is not None and not isinstance(messages, list)):
        return None
    inputs = {str(name): _shown(value) for name, value in variables.items()}
    if messages:
        inputs[MESSAGES_KEY] = "\n".join(_message_line(m) for m in messages)
    return inputs


def _message_line(message: object) -> str:
    if not isinstance(message, dict):
        return _shown(message)
    content = message.get("content")
    if isinstance(content, list):  # content parts: their text, in order
        content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return f"{message.get('role', '?')}: {'' if content is None else _shown(content)}"


def _shown(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _chat_text(choices: object) -> str:
    """``choices[0].message.content``; a message with tool calls and no content is its
    tool calls as JSON. Raises ValueError."""
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(message, dict):
        raise ValueError("answer has no choices[0].message")
    content = message.get("content")
    if isinstance(content, str):
        return content
    if content is None and message.get("tool_calls"):
        return json.dumps(message["tool_calls"], sort_keys=True)
    raise ValueError("answer has no choices[0].message.content")


def _error_message(error: object) -> str:
    if isinstance(error, dict) and error.get("message") is not None:
        return str(error["message"])
    return _shown(error)
