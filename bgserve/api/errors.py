"""The one place bgserve's error tree becomes HTTP status codes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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


async def _bgserve_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.BgserveError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, errors.Unauthorized) else None
    return JSONResponse(error_body(exc), status_code=status_of(exc), headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"field": _field_path(tuple(e.get("loc", ()))), "problem": e.get("msg", "invalid")}
        for e in exc.errors()
    ]
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


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(errors.BgserveError, _bgserve_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
