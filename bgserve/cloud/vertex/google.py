"""Where the Vertex AI SDK meets bgserve: the GAPIC clients, Application Default Credentials,
every call's errors translated into BackendError, throttling retried, and waiting for
long-running operations. google-cloud-aiplatform and google-cloud-monitoring are imported
here (lazily: they are the optional ``vertex`` extra)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bgserve.errors import BackendError, ReadinessTimeout
from bgserve.settings.cloud import VertexGroup

_EXTRA = 'pip install "bgserve[vertex]"'
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_VERTEX_ROLE = "the Vertex AI User role (aiplatform.endpoints.*, aiplatform.models.*)"


@dataclass(frozen=True)
class VertexClients:
    """The two GAPIC clients the backend uses, the credentials its direct calls of a
    deployed model carry (``None``: calls go without a token) and, when given, the Cloud
    Monitoring client live analysis reads (``None``: one is made when asked for, see
    :func:`monitoring_client`)."""

    endpoints: Any
    models: Any
    credentials: Any = None
    monitoring: Any = None


def vertex_clients(vx: VertexGroup, credentials: Any = None) -> VertexClients:
    """EndpointService and ModelService clients of the settings' region over gRPC, with
    ``credentials`` (default: Application Default Credentials). Raises BackendError without
    the SDK, a project, a location or usable credentials."""
    missing = [n for n in ("project", "location") if not getattr(vx, n)]
    if missing:
        raise BackendError(
            "the vertex backend needs "
            + " and ".join(f"BGSERVE_VERTEX_{m.upper()}" for m in missing)
        )
    try:
        from google.api_core.client_options import ClientOptions
        from google.cloud import aiplatform_v1
    except ImportError as exc:
        raise BackendError(f"the vertex backend needs google-cloud-aiplatform: {_EXTRA}") from exc
    if credentials is None:
        credentials = default_credentials()
    options = ClientOptions(
        api_endpoint=vx.api_endpoint or f"{vx.location}-aiplatform.googleapis.com"
    )
    return VertexClients(
        aiplatform_v1.EndpointServiceClient(credentials=credentials, client_options=options),
        aiplatform_v1.ModelServiceClient(credentials=credentials, client_options=options),
        credentials,
    )


def monitoring_client(clients: VertexClients) -> Any:
    """The MetricServiceClient of ``clients``, else one of Google's Cloud Monitoring API
    with their credentials (default: Application Default Credentials). Raises BackendError
    without google-cloud-monitoring or usable credentials."""
    if clients.monitoring is not None:
        return clients.monitoring
    try:
        from google.cloud import monitoring_v3
    except ImportError as exc:
        raise BackendError(
            f"live analysis on Vertex AI needs google-cloud-monitoring: {_EXTRA}"
        ) from exc
    credentials = clients.credentials or default_credentials()
    return monitoring_v3.MetricServiceClient(credentials=credentials)


def default_credentials() -> Any:
    """google-auth's Application Default Credentials. Raises BackendError naming where ADC
    looks when there are none."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        credentials, _ = google.auth.default(scopes=SCOPES)
    except DefaultCredentialsError as exc:
        raise BackendError(
            f"the vertex backend found no Google credentials ({_one_line(exc)}): set "
            "GOOGLE_APPLICATION_CREDENTIALS, run on a service account or use `gcloud auth "
            "application-default login`"
        ) from exc
    return credentials


def bearer_token(credentials: Any) -> dict[str, str]:
    """The Authorization header of ``credentials`` (refreshed when stale), empty without
    credentials. Raises BackendError when the token cannot be refreshed."""
    if credentials is None:
        return {}
    if not credentials.valid:
        from google.auth.exceptions import GoogleAuthError
        from google.auth.transport.requests import Request

        try:
            credentials.refresh(Request())
        except GoogleAuthError as exc:
            raise BackendError(f"Vertex AI: the Google token cannot be refreshed: {exc}") from exc
    return {"Authorization": f"Bearer {credentials.token}"}


def throttle_retry(first_wait: float, timeout: float) -> Any:
    """The retry of every call: RESOURCE_EXHAUSTED (quota) and UNAVAILABLE are tried again,
    waiting ``first_wait`` seconds then twice as long each time, for ``timeout`` in all."""
    from google.api_core import exceptions, retry

    return retry.Retry(
        predicate=retry.if_exception_type(
            exceptions.ResourceExhausted, exceptions.ServiceUnavailable
        ),
        initial=first_wait,
        maximum=max(first_wait * 8, 1.0),
        multiplier=2.0,
        timeout=timeout,
    )


def call(
    operation: str,
    method: Callable[..., Any],
    *args: Any,
    missing_ok: bool = False,
    needs: str = _VERTEX_ROLE,
    **kw: Any,
) -> Any:
    """``method(*args, **kw)`` with the SDK's errors translated: None for NOT_FOUND when
    ``missing_ok``; BackendError naming the operation, Vertex's status and message (and,
    for missing permissions, the role bgserve ``needs``) for anything else."""
    from google.api_core import exceptions

    try:
        return method(*args, **kw)
    except exceptions.NotFound as exc:
        if missing_ok:
            return None
        raise BackendError(f"Vertex AI {operation} refused: {_reason(exc)}") from exc
    except (exceptions.PermissionDenied, exceptions.Unauthenticated) as exc:
        raise BackendError(
            f"Vertex AI {operation} refused: {_reason(exc)}; bgserve's identity needs "
            f"{needs} on the project"
        ) from exc
    except exceptions.RetryError as exc:
        raise BackendError(
            f"Vertex AI {operation} still throttled when the retries ran out ({_one_line(exc)}): "
            "retry later or raise the project's Vertex AI quota"
        ) from exc
    except exceptions.GoogleAPIError as exc:
        raise BackendError(f"Vertex AI {operation} refused: {_reason(exc)}") from exc


def wait(
    operation: str,
    future: Any,
    deadline: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    poll: float,
    retry: Any = None,
) -> Any:
    """The result of a long-running operation (api_core's Operation), polled every ``poll``
    seconds (each poll with ``retry``) until the ``clock`` reads ``deadline``. Raises
    ReadinessTimeout when it still runs then, BackendError when it failed (with Vertex's
    status and message)."""
    while not call(operation, future.done, retry=retry):
        if clock() >= deadline:
            raise ReadinessTimeout(f"Vertex AI {operation} did not finish in time")
        sleep(poll)
    return call(operation, future.result)


def _reason(exc: Any) -> str:
    """``STATUS: message`` of a Google API error."""
    status = getattr(exc, "grpc_status_code", None)
    code = status.name if status is not None else type(exc).__name__
    return f"{code}: {_one_line(getattr(exc, 'message', None) or exc)}"


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
