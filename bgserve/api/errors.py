"""The one place bgserve's error tree becomes HTTP status codes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bgserve import errors

STATUS: list[tuple[type[errors.BgserveError], int]] = [
    (errors.PayloadTooLarge, 413),
    (errors.InvalidInput, 422),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.Unavailable, 503),
]


def status_of(exc: errors.BgserveError) -> int:
    """The HTTP status of a bgserve error (500 only for an unmapped subclass)."""
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: errors.BgserveError) -> dict[str, Any]:
    """The JSON body every error response carries."""
    body: dict[str, Any] = {"error": type(exc).__name__, "message": exc.message}
    field = getattr(exc, "field", None)
    if field:
        body["field"] = field
    if exc.details:
        body["details"] = exc.details
    if exc.hint:
        body["hint"] = exc.hint
    return body


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _problem(error: Mapping[str, Any]) -> dict[str, str]:
    """One pydantic/FastAPI validation error as ``{field, problem}``."""
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "malformed")
        loc = tuple(error.get("loc", ()))
        where = f" at character {loc[1]}" if len(loc) > 1 else ""
        return {"field": "body", "problem": f"not valid JSON: {reason}{where}"}
    return {
        "field": _field_path(tuple(error.get("loc", ()))),
        "problem": error.get("msg", "invalid"),
    }


async def _bgserve_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.BgserveError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, errors.Unauthorized) else None
    return JSONResponse(error_body(exc), status_code=status_of(exc), headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [_problem(e) for e in exc.errors()]
    first = problems[0] if problems else {"field": "body", "problem": "invalid request"}
    message = f"{first['field']}: {first['problem']}"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem(s), see details)"
    body = {
        "error": "InvalidInput",
        "message": message,
        "field": first["field"],
        "details": {"problems": problems},
    }
    return JSONResponse(body, status_code=422)


_HTTP_NAMES = {404: "NotFound", 405: "MethodNotAllowed"}


async def _http_error(_request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no route, wrong method, unparsable body) in bgserve's shape."""
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 400:  # FastAPI could not decode the body at all (e.g. not UTF-8)
        body = {
            "error": "InvalidInput",
            "message": "body: cannot be parsed: send a JSON object encoded in UTF-8",
            "field": "body",
        }
        return JSONResponse(body, status_code=422, headers=headers)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    detail = exc.detail if isinstance(exc.detail, str) else "request refused"
    name = _HTTP_NAMES.get(exc.status_code, "HTTPError")
    return JSONResponse(
        {"error": name, "message": detail.lower()}, status_code=exc.status_code, headers=headers
    )


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(errors.BgserveError, _bgserve_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
