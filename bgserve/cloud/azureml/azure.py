"""Where the Azure ML SDK meets bgserve: the client, the credential, every call's errors
translated into BackendError, and waiting for Azure's long-running operations. azure-ai-ml
and azure-identity are imported here (lazily: they are the optional ``azureml`` extra)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.settings.cloud import AzureMLGroup

_EXTRA = 'pip install "bgserve[azureml]"'


class EndpointBusy(BackendError):
    """Azure refused a change with 409 Conflict: another operation on the endpoint (or one
    of its deployments) is still running. Retried until the ready timeout."""


def ml_client(az: AzureMLGroup, credential: Any = None, **client_kwargs: Any) -> Any:
    """An MLClient of the settings' workspace; ``credential`` defaults to azure-identity's
    DefaultAzureCredential, ``client_kwargs`` go down to azure-core's pipelines (a
    ``transport``, retry settings). Raises BackendError without the SDK or a workspace."""
    missing = [n for n in ("subscription_id", "resource_group", "workspace") if not getattr(az, n)]
    if missing:
        raise BackendError(
            "the azureml backend needs "
            + " and ".join(f"BGSERVE_AZUREML_{m.upper()}" for m in missing)
        )
    try:
        from azure.ai.ml import MLClient
    except ImportError as exc:
        raise BackendError(f"the azureml backend needs azure-ai-ml: {_EXTRA}") from exc
    if credential is None:
        credential = default_credential()
    return MLClient(
        credential, az.subscription_id, az.resource_group, az.workspace, **client_kwargs
    )


def default_credential() -> Any:
    """azure-identity's DefaultAzureCredential: environment, managed identity, ``az login``,
    tried in its order when a token is first needed. Raises BackendError without it."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise BackendError(f"the azureml backend needs azure-identity: {_EXTRA}") from exc
    return DefaultAzureCredential()


def call(
    operation: str, method: Callable[..., Any], *args: Any, missing_ok: bool = False, **kw: Any
) -> Any:
    """``method(*args, **kw)`` with the SDK's errors translated: None for a missing resource
    when ``missing_ok``; EndpointBusy for 409 Conflict; BackendError naming the operation,
    Azure's error code and message for anything else."""
    from azure.ai.ml.exceptions import MlException
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
    )

    try:
        return method(*args, **kw)
    except ResourceNotFoundError as exc:
        if missing_ok:
            return None
        raise BackendError(f"Azure ML {operation} refused: {error_reason(exc)}") from exc
    except ClientAuthenticationError as exc:
        raise BackendError(
            f"Azure ML {operation}: no usable Azure credential ({one_line(exc)}); set "
            "AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, use a managed identity or "
            "`az login`"
        ) from exc
    except HttpResponseError as exc:
        error = EndpointBusy if exc.status_code == 409 else BackendError
        raise error(f"Azure ML {operation} refused: {error_reason(exc)}") from exc
    except MlException as exc:
        raise BackendError(f"Azure ML {operation} refused by the SDK: {one_line(exc)}") from exc
    except AzureError as exc:
        raise BackendError(f"Azure ML {operation} failed: {one_line(exc)}") from exc


def wait(operation: str, poller: Any, timeout: float) -> Any:
    """The result of a long-running operation (the SDK's LROPoller), waiting at most
    ``timeout`` seconds. Raises ReadinessTimeout when it is still running then, BackendError
    when it failed (with Azure's error)."""
    call(operation, poller.wait, timeout=timeout)  # re-raises the operation's failure
    if not poller.done():
        raise ReadinessTimeout(
            f"Azure ML {operation} did not finish within {timeout:g}s (status {poller.status()})"
        )
    return call(operation, poller.result)


def error_reason(exc: Any) -> str:
    """``code: message`` of an Azure error answer (ARM, Azure Monitor), else azure-core's
    own message."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or f"HTTP {exc.status_code}"
    message = getattr(error, "message", None) or one_line(exc)
    return f"{code}: {one_line(message)}"


def one_line(value: object) -> str:
    """``value`` as text on one line (an SDK's multi-line message in an error of ours)."""
    return " ".join(str(value).split())
