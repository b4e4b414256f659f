"""Where the Databricks SDK meets bgserve: the workspace client and every call's errors
translated into bgserve's. databricks-sdk is imported here (lazily: it is the optional
``databricks`` extra)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.settings.cloud import DatabricksGroup

_EXTRA = 'pip install "bgserve[databricks]"'


class EndpointBusy(BackendError):
    """Databricks refused a change with 409 RESOURCE_CONFLICT: a config update of the
    endpoint is still in progress. Retried until the ready timeout."""


def workspace_client(group: DatabricksGroup, **config: Any) -> Any:
    """A WorkspaceClient of the settings' workspace (``host`` when set, else the SDK's);
    ``config`` goes to the SDK's Config (a ``token``, an ``http_adapter``). Raises
    BackendError without the SDK or when the SDK finds no workspace or credentials."""
    try:
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.core import Config
    except ImportError as exc:
        raise BackendError(f"the databricks backend needs databricks-sdk: {_EXTRA}") from exc
    if group.host:
        config.setdefault("host", group.host)
    try:
        return WorkspaceClient(config=Config(**config))
    except ValueError as exc:  # the SDK's "cannot configure default credentials"
        raise BackendError(
            f"the databricks backend found no workspace or credentials ({_one_line(exc)}): "
            "set BGSERVE_DATABRICKS_HOST (or DATABRICKS_HOST) and DATABRICKS_TOKEN, "
            "DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET or a profile"
        ) from exc


def call(
    operation: str, method: Callable[..., Any], *args: Any, missing_ok: bool = False, **kw: Any
) -> Any:
    """``method(*args, **kw)`` with the SDK's errors translated: None for a missing resource
    when ``missing_ok``; EndpointBusy for 409 RESOURCE_CONFLICT; BackendError naming the
    operation, Databricks' error code and message for anything else (the SDK has already
    retried 429 REQUEST_LIMIT_EXCEEDED after Retry-After)."""
    from databricks.sdk.errors import (
        NotFound,
        OperationFailed,
        PermissionDenied,
        ResourceAlreadyExists,
        ResourceConflict,
        Unauthenticated,
    )
    from databricks.sdk.errors.base import DatabricksError

    try:
        return method(*args, **kw)
    except NotFound as exc:
        if missing_ok:
            return None
        raise BackendError(f"Databricks {operation} refused: {_reason(exc)}") from exc
    except (Unauthenticated, PermissionDenied) as exc:
        raise BackendError(
            f"Databricks {operation} refused: {_reason(exc)}; give bgserve's identity "
            "CAN_MANAGE on serving endpoints (DATABRICKS_TOKEN, a service principal)"
        ) from exc
    except ResourceAlreadyExists as exc:
        raise BackendError(f"Databricks {operation} refused: {_reason(exc)}") from exc
    except ResourceConflict as exc:
        raise EndpointBusy(f"Databricks {operation} refused: {_reason(exc)}") from exc
    except DatabricksError as exc:
        raise BackendError(f"Databricks {operation} refused: {_reason(exc)}") from exc
    except OperationFailed as exc:
        raise BackendError(f"Databricks {operation} failed: {_one_line(exc)}") from exc
    except TimeoutError as exc:  # the SDK's retries and waiters give up with it
        raise ReadinessTimeout(f"Databricks {operation} timed out: {_one_line(exc)}") from exc


def _reason(exc: Any) -> str:
    """``ERROR_CODE: message`` of a Databricks error answer."""
    code = getattr(exc, "error_code", None) or type(exc).__name__
    return f"{code}: {_one_line(exc)}"


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
