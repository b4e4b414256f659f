"""Where the AWS SDK meets bgserve: sessions and clients, every call's errors translated
into BackendError, and SigV4-signed calls of one variant. boto3 and botocore are
imported here (lazily: they are the optional ``sagemaker`` extra)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bgserve.errors import BackendError

_NOT_FOUND = "Could not find"  # SageMaker's ValidationException for a missing resource
TARGET_VARIANT = "X-Amzn-SageMaker-Target-Variant"


def aws_session(region: str) -> Any:
    """A boto3 session in ``region`` (empty: boto3's own; credentials as boto3 finds them).
    Raises BackendError when boto3 is not installed."""
    try:
        import boto3
    except ImportError as exc:
        raise BackendError(
            'the sagemaker backend needs boto3: pip install "bgserve[sagemaker]"'
        ) from exc
    return boto3.session.Session(region_name=region or None)


def client(session: Any, service: str, endpoint_url: str) -> Any:
    """A boto3 client of ``service`` (retrying throttling: botocore's standard mode), at
    ``endpoint_url`` when one is given. Raises BackendError without a region."""
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    try:
        return session.client(
            service,
            endpoint_url=endpoint_url or None,
            config=Config(retries={"mode": "standard", "max_attempts": 5}),
        )
    except BotoCoreError as exc:
        raise BackendError(f"{service} client: {exc} (set BGSERVE_SAGEMAKER_REGION)") from exc


def call(
    operation: str,
    method: Callable[..., Any],
    *,
    missing_ok: bool = False,
    service: str = "SageMaker",
    **kw: Any,
) -> Any:
    """``method(**kw)`` with the AWS SDK's errors translated: BackendError naming the
    service's operation, the error code and the service's message; None for a missing
    resource when ``missing_ok``."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return method(**kw)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        message = str(error.get("Message", exc))
        if missing_ok and message.startswith(_NOT_FOUND):
            return None
        code = error.get("Code", "error")
        raise BackendError(f"{service} {operation} refused: {code}: {message}") from exc
    except BotoCoreError as exc:
        one_line = " ".join(str(exc).split())  # botocore's run over several lines
        raise BackendError(f"{service} {operation} failed: {one_line}") from exc


def variant_signer(
    session: Any, region: str, url: str, variant: str
) -> Callable[[bytes], dict[str, str]]:
    """The headers of one call of ``variant`` at ``url`` for a given body: the variant
    named in ``X-Amzn-SageMaker-Target-Variant``, the whole request SigV4-signed with the
    session's credentials. Raises BackendError without credentials."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    credentials = session.get_credentials()
    if credentials is None:
        raise BackendError(
            "no AWS credentials to call SageMaker endpoints with (AWS_ACCESS_KEY_ID, a "
            "profile or a role, as boto3 finds them)"
        )
    signer = SigV4Auth(credentials, "sagemaker", region)

    def headers(body: bytes) -> dict[str, str]:
        request = AWSRequest(
            "POST",
            url,
            data=body,
            headers={"Content-Type": "application/json", TARGET_VARIANT: variant},
        )
        signer.add_auth(request)
        return dict(request.headers.items())

    return headers
