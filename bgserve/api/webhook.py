"""``POST /follow/webhook``: MLflow registry webhook deliveries.

The route takes no bearer token (MLflow cannot send one): the auth gate leaves the path
open and the delivery's HMAC signature, timestamp and id are checked instead
(:mod:`bgserve.app.follow_webhook`), as the dashboard checks its own cookie. The body is
read under its own limit (``BGSERVE_FOLLOW_WEBHOOK_MAX_BYTES``), the delivery is recorded
and answered at once (202); the leader's follow engine does the work.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status
from starlette.concurrency import run_in_threadpool

from bgserve.api.deps import components
from bgserve.api.routes.follow import FollowingDep
from bgserve.api.schemas import error_responses
from bgserve.errors import PayloadTooLarge

WEBHOOK_PATH = "/follow/webhook"

router = APIRouter(tags=["follow"])


@router.post(
    WEBHOOK_PATH,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(401, 403, 409, 413, 422),
)
async def mlflow_webhook(request: Request, rules: FollowingDep) -> dict[str, Any]:
    """An MLflow registry webhook delivery (signed with BGSERVE_FOLLOW_WEBHOOK_SECRET):
    recorded and answered at once; the leader's follow engine does the work."""
    limit = components(request).settings.follow.webhook_max_bytes
    body = await _read_limited(request, limit)
    headers = {key.lower(): value for key, value in request.headers.items()}
    delivery, marked = await run_in_threadpool(rules.receive, headers, body)
    return {"delivery_id": delivery.delivery_id, "event": delivery.event, "deployments": marked}


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, refused (413) past ``limit`` bytes whatever Content-Length said."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"webhook delivery over {limit} bytes: alias events are far smaller; raise "
        "BGSERVE_FOLLOW_WEBHOOK_MAX_BYTES if the webhook sends other events",
        field="body",
    )
