"""What the Azure ML stand-in needs of HTTP and of the SDK's REST models: an azure-core
transport answering in process, ARM's error shape, and a validator that refuses a request
body as ARM's deserializer does, checked against the SDK's own REST models
(``azure.ai.ml._restclient.arm_ml_service.models``: their REST names, types, discriminators
and required fields).

The validator refuses, as .NET's JSON deserializer behind ARM does (wording after it):
a member the model does not have, a required member missing or null, a value of the wrong
JSON type (a string for an int, ``10.5`` for an int), an unknown discriminator, an enum
value outside the model's known values, and an ISO 8601 duration that does not parse.
Read-only members (``provisioningState``, ``scoringUri``, ...) are accepted and ignored.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import functools
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import CaseInsensitiveDict

Answer = tuple[int, dict[str, str], Any]
"""Status, headers and a JSON-ready body (None: no body)."""


def arm_error(status: int, code: str, message: str, details: Sequence[str] = ()) -> Answer:
    """An ARM error answer: ``{"error": {"code", "message", "details": [...]}}``."""
    body = {
        "error": {
            "code": code,
            "message": message,
            "details": [{"code": code, "message": d} for d in details],
        }
    }
    return status, {}, body


def invalid(problems: list[str]) -> Answer:
    """400 InvalidRequestContent naming every problem of a body."""
    return arm_error(
        400,
        "InvalidRequestContent",
        f"The request content was invalid and could not be deserialized: '{problems[0]}'.",
        problems,
    )


def missing(what: str, name: str) -> Answer:
    """404 ResourceNotFound."""
    return arm_error(404, "ResourceNotFound", f"The {what} '{name}' was not found.")


NAME = re.compile(r"[a-zA-Z][-a-zA-Z0-9]{1,30}[a-zA-Z0-9]\Z")


def name_problem(kind: str, name: str) -> Answer | None:
    """Azure's rule for endpoint and deployment names, or None when ``name`` keeps it."""
    if NAME.match(name):
        return None
    return arm_error(
        400,
        "BadArgument",
        f"Invalid {kind} name '{name}': it must be 3-32 "
        "characters of letters, digits and '-', start with a letter and end "
        "with a letter or digit.",
    )


# ----- the transport -----


class _Internal:
    def close(self) -> None:
        pass


class _Response(HttpResponseImpl):
    def __init__(self, request: HttpRequest, status: int, headers: dict[str, str], data: bytes):
        super().__init__(
            request=request,
            internal_response=_Internal(),
            block_size=4096,
            status_code=status,
            reason="OK" if status < 400 else "Error",
            content_type=headers.get("Content-Type", "application/json"),
            headers=CaseInsensitiveDict(headers),
            stream_download_generator=None,
        )
        self._content = data


class InProcessTransport(HttpTransport[HttpRequest, Any]):
    """An azure-core transport that hands every request to ``answer(method, url, headers,
    body)`` in process: what MLClient's ``transport=`` keyword puts under every pipeline."""

    def __init__(self, answer: Callable[[str, str, dict[str, str], bytes], Answer]) -> None:
        self.answer = answer

    def send(self, request: HttpRequest, **kwargs: Any) -> _Response:
        content = request.content
        body = content.encode() if isinstance(content, str) else bytes(content or b"")
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, reply, payload = self.answer(request.method, request.url, headers, body)
        data = b"" if payload is None else json.dumps(payload).encode()
        if payload is not None:
            reply = {"Content-Type": "application/json; charset=utf-8", **reply}
        return _Response(request, status, reply, data)

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> InProcessTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


# ----- the validator -----


def rest_model(name: str) -> type[Any]:
    """The SDK's REST model class ``name`` (``OnlineEndpoint``, ...)."""
    from azure.ai.ml._restclient.arm_ml_service import models

    found: type[Any] = getattr(models, name)
    return found


def body_problems(model: str, data: Any) -> list[str]:
    """Every way ``data`` fails the REST model ``model``, [] when it deserializes."""
    return _problems(rest_model(model), data, "")


@functools.cache
def _fields(cls: Any) -> dict[str, tuple[Any, list[str]]]:
    """REST name -> (type hint, visibility) of every field of a model class."""
    from azure.ai.ml._restclient.arm_ml_service import models
    from azure.ai.ml._restclient.arm_ml_service.models import _models

    with contextlib.suppress(Exception):  # a model's mapping form may need more
        cls({})  # the SDK computes a class's field table on first use
    hints = typing.get_type_hints(cls, globalns=vars(_models), localns={"_models": models})
    return {
        rf._rest_name: (hints[attr], list(rf._visibility or []))
        for attr, rf in cls._attr_to_rest_field.items()
    }


def _concrete(cls: Any, data: Mapping[str, Any], path: str) -> tuple[Any, list[str]]:
    """The subclass a discriminated model's body names, or a problem."""
    mapping = cls.__dict__.get("__mapping__")
    if not mapping:
        return cls, []
    key = next(k for k, (_, v) in _fields(cls).items() if _is_discriminator(cls, k))
    value = data.get(key)
    if value not in mapping:
        return cls, [
            f"'{value}' is not a known {key} of {cls.__name__} ({sorted(mapping)}). "
            f"Path '{path}{key}'"
        ]
    return mapping[value], []


def _is_discriminator(cls: Any, rest_name: str) -> bool:
    return any(
        rf._rest_name == rest_name and rf._is_discriminator
        for rf in cls._attr_to_rest_field.values()
    )


def _problems(cls: Any, data: Any, path: str) -> list[str]:
    if not isinstance(data, dict):
        return [f"Expected an object of type '{cls.__name__}'. Path '{path.rstrip('.')}'"]
    cls, found = _concrete(cls, data, path)
    if found:
        return found
    fields = _fields(cls)
    for key, value in data.items():
        if key not in fields:
            found.append(
                f"Could not find member '{key}' on object of type "
                f"'{cls.__name__}'. Path '{path}{key}'"
            )
        elif fields[key][1] != ["read"]:
            found += _value_problems(fields[key][0], value, f"{path}{key}")
    for key, (hint, visibility) in fields.items():
        if visibility != ["read"] and not _optional(hint) and data.get(key) is None:
            found.append(f"Required property '{key}' not found in JSON. Path '{path}{key}'")
    return found


def _optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(hint)
    )


def _value_problems(hint: Any, value: Any, path: str) -> list[str]:
    if value is None:
        return []  # a required member's null is reported by _problems
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _union_problems([a for a in args if a is not type(None)], value, path)
    if origin is typing.Literal:
        allowed = [a.value if isinstance(a, enum.Enum) else a for a in args]
        return [] if value in allowed else [f"'{value}' is not one of {allowed}. Path '{path}'"]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"Expected an object. Path '{path}'"]
        return [p for k, v in value.items() for p in _value_problems(args[1], v, f"{path}.{k}")]
    if origin is list:
        if not isinstance(value, list):
            return [f"Expected an array. Path '{path}'"]
        return [p for i, v in enumerate(value) for p in _value_problems(args[0], v, f"{path}[{i}]")]
    return _scalar_problems(hint, value, path)


def _union_problems(args: list[Any], value: Any, path: str) -> list[str]:
    enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
    if enums and str in args:
        known = [m.value for m in enums[0]]
        if isinstance(value, str) and value.lower() in (k.lower() for k in known):
            return []
        return [
            f"Error converting value '{value}' to type '{enums[0].__name__}' "
            f"(known values {known}). Path '{path}'"
        ]
    if len(args) == 1:
        return _value_problems(args[0], value, path)
    return []


def _scalar_problems(hint: Any, value: Any, path: str) -> list[str]:
    if hint is Any:
        return []
    from azure.ai.ml._restclient.arm_ml_service._utils.model_base import Model

    if isinstance(hint, type) and issubclass(hint, Model):
        return _problems(hint, value, f"{path}.")
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif hint is datetime.timedelta:
        return _duration_problems(value, path)
    else:
        ok = isinstance(value, str)
    if ok:
        return []
    return [
        f"Error converting value {json.dumps(value)} to type "
        f"'{getattr(hint, '__name__', hint)}'. Path '{path}'"
    ]


def _duration_problems(value: Any, path: str) -> list[str]:
    import isodate

    try:
        isodate.parse_duration(value)
    except (isodate.ISO8601Error, TypeError, ValueError):
        return [f"'{value}' is not an ISO 8601 duration. Path '{path}'"]
    return []
