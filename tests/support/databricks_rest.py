"""What the Databricks stand-in needs of HTTP and of the SDK's request models: a requests
adapter answering in process (the SDK's ``Config(http_adapter=...)`` hook), Databricks'
error shape, and a validator that refuses a body the SDK's own types do not describe.

The validator reads the types from the SDK itself: a request body's members are the
parameters of the ``ServingEndpointsAPI`` method that sends it (``create``,
``update_config``, ``query``), and each member's type is that parameter's annotation,
down through the ``databricks.sdk.service.serving`` dataclasses. It refuses a member the
type does not have, a required dataclass field missing, a value of the wrong JSON type, and
an enum value outside the SDK's enum.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
import typing
from collections.abc import Callable
from typing import Any

import requests

Answer = tuple[int, dict[str, str], Any]
"""Status, headers and a JSON-ready body (None: no body)."""


def db_error(status: int, code: str, message: str) -> Answer:
    """A Databricks error answer: ``{"error_code", "message"}``."""
    return status, {}, {"error_code": code, "message": message}


def invalid(message: str) -> Answer:
    """400 INVALID_PARAMETER_VALUE."""
    return db_error(400, "INVALID_PARAMETER_VALUE", message)


def missing(what: str, name: str) -> Answer:
    """404 RESOURCE_DOES_NOT_EXIST."""
    return db_error(404, "RESOURCE_DOES_NOT_EXIST", f"{what} with name '{name}' does not exist.")


class InProcessAdapter(requests.adapters.BaseAdapter):
    """A requests transport that hands every request to ``answer(method, url, headers,
    body)`` in process: what the SDK's ``Config(http_adapter=...)`` mounts for http and
    https."""

    def __init__(self, answer: Callable[[str, str, dict[str, str], bytes], Answer]) -> None:
        super().__init__()
        self.answer = answer

    def send(  # type: ignore[override]  # the adapter ignores requests' socket options
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        raw = request.body
        body = raw.encode() if isinstance(raw, str) else raw if isinstance(raw, bytes) else b""
        headers = {k.lower(): str(v) for k, v in request.headers.items()}
        status, reply, payload = self.answer(str(request.method), str(request.url), headers, body)
        response = requests.Response()
        response.status_code = status
        response.request, response.url = request, str(request.url)
        if isinstance(payload, bytes):
            response._content = payload
        else:
            response._content = b"" if payload is None else json.dumps(payload).encode()
            reply = {"Content-Type": "application/json", **reply}
        response.headers.update(reply)
        response._content_consumed = True  # the SDK streams raw answers (export_metrics)
        response.reason = "OK" if status < 400 else "Error"
        return response

    def close(self) -> None:
        pass


# ----- the validator -----


@functools.cache
def _request_members(method: str) -> dict[str, Any]:
    """Body member -> type of a ServingEndpointsAPI method's request (path and waiter
    parameters left out)."""
    from databricks.sdk.service import serving

    hints = typing.get_type_hints(getattr(serving.ServingEndpointsAPI, method), vars(serving))
    path = {"update_config": {"name"}}.get(method, set())
    if method == "query":
        path = {"name"}
    return {k: v for k, v in hints.items() if k not in {"return", "timeout", *path}}


def request_problems(method: str, body: Any) -> list[str]:
    """Every way ``body`` fails the request of ``ServingEndpointsAPI.<method>``."""
    if not isinstance(body, dict):
        return ["the request body must be a JSON object"]
    members = _request_members(method)
    found = [f"Unknown field '{k}' in the request." for k in body if k not in members]
    for key, value in body.items():
        if key in members:
            found += _problems(members[key], value, key)
    if method == "create" and not body.get("name"):
        found.append("Missing required field: name.")
    return found


@functools.cache
def _fields(cls: type) -> dict[str, tuple[Any, bool]]:
    """Field -> (type, required) of one of the SDK's dataclasses."""
    from databricks.sdk.service import serving

    hints = typing.get_type_hints(cls, vars(serving))
    return {
        f.name: (hints[f.name], f.default is dataclasses.MISSING) for f in dataclasses.fields(cls)
    }


def _problems(hint: Any, value: Any, path: str) -> list[str]:
    if value is None:
        return []
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _problems(next(a for a in args if a is not type(None)), value, path)
    if origin is list:
        if not isinstance(value, list):
            return [f"Expected an array for {path}."]
        return [p for i, v in enumerate(value) for p in _problems(args[0], v, f"{path}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"Expected an object for {path}."]
        return [p for k, v in value.items() for p in _problems(args[1], v, f"{path}.{k}")]
    if dataclasses.is_dataclass(hint):
        return _object_problems(hint, value, path)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        known = [m.value for m in hint]
        ok = value in known
        return [] if ok else [f"Invalid value '{value}' for {path}: one of {known}."]
    return _scalar_problems(hint, value, path)


def _object_problems(cls: Any, value: Any, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"Expected an object of type {cls.__name__} for {path}."]
    fields = _fields(cls)
    found = [f"Unknown field '{path}.{k}' ({cls.__name__})." for k in value if k not in fields]
    for key, item in value.items():
        if key in fields:
            found += _problems(fields[key][0], item, f"{path}.{key}")
    for key, (_, required) in fields.items():
        if required and value.get(key) is None:
            found.append(f"Missing required field: {path}.{key}.")
    return found


def _scalar_problems(hint: Any, value: Any, path: str) -> list[str]:
    if hint is Any:
        return []
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    name = getattr(hint, "__name__", hint)
    return [] if ok else [f"Invalid value {json.dumps(value)} for {path}: expected {name}."]
