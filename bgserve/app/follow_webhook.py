"""Check an MLflow webhook delivery before anything trusts it.

MLflow (``mlflow/webhooks/delivery.py``) sends each delivery with three headers:
``X-MLflow-Delivery-Id`` (a UUID), ``X-MLflow-Timestamp`` (Unix seconds) and, when the
webhook has a secret, ``X-MLflow-Signature: v1,<base64 HMAC-SHA256>`` computed with the
secret over ``<delivery id>.<timestamp>.<body>``, the body being the exact bytes sent
(the Standard Webhooks scheme). The body is ``{"entity", "action", "timestamp", "data"}``;
the event is ``<entity>.<action>``, e.g. ``prompt_alias.created`` with
``data = {"name", "alias", "version"}``.

:class:`WebhookVerifier` checks, in this order and before parsing the body: the headers
are there, the timestamp lies within ``max_age_s`` of this clock either way, and one of the
signatures matches, compared in constant time. Only then is the body read as JSON. Replays
inside the window are refused by the store's record of accepted delivery ids
(:meth:`bgserve.store.follow_store.FollowStore.receive`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bgserve.errors import Forbidden, InvalidInput, Unauthorized

SIGNATURE_HEADER = "x-mlflow-signature"
TIMESTAMP_HEADER = "x-mlflow-timestamp"
DELIVERY_HEADER = "x-mlflow-delivery-id"
SIGNATURE_VERSION = "v1"
_DELIVERY_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


@dataclass(frozen=True)
class Delivery:
    """One verified delivery: its id, when MLflow sent it, the event and its data."""

    delivery_id: str
    sent_at: int
    event: str
    data: Mapping[str, Any]

    def text(self, key: str) -> str | None:
        """``data[key]`` as text, None when missing or not a string or number."""
        value = self.data.get(key)
        return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def _mac(secret: bytes, delivery_id: str, timestamp: str, body: bytes) -> bytes:
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    return hmac.new(secret, signed, hashlib.sha256).digest()


def sign(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The signature header MLflow sends for this delivery: ``v1,<base64>``."""
    digest = _mac(secret.encode(), delivery_id, timestamp, body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


class WebhookVerifier:
    """Verifies MLflow deliveries signed with ``secret`` (empty: every delivery is refused)."""

    def __init__(
        self, secret: str, max_age_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._secret = secret.encode()
        self.max_age_s = max_age_s
        self.clock = clock

    @property
    def enabled(self) -> bool:
        return bool(self._secret)

    def verify(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        """The delivery ``body`` carries, once its headers prove it came from MLflow.

        Raises Forbidden (no secret configured), Unauthorized (a header missing or
        malformed, a timestamp outside the window, no matching signature), InvalidInput
        (a signed body that is not an MLflow event).
        """
        if not self.enabled:
            raise Forbidden(
                "webhook deliveries are refused: no BGSERVE_FOLLOW_WEBHOOK_SECRET is set on this "
                "bgserve (give the MLflow webhook the same secret)"
            )
        delivery_id = _header(headers, DELIVERY_HEADER, _DELIVERY_ID)
        timestamp = _header(headers, TIMESTAMP_HEADER, _TIMESTAMP)
        self._check_age(int(timestamp))
        self._check_signature(headers.get(SIGNATURE_HEADER, ""), delivery_id, timestamp, body)
        event, data = _event(body)
        return Delivery(delivery_id, int(timestamp), event, data)

    def _check_age(self, sent_at: int) -> None:
        skew = self.clock() - sent_at
        if abs(skew) > self.max_age_s:
            raise Unauthorized(
                f"{TIMESTAMP_HEADER} is {skew:+.0f} s from this server's clock, outside the "
                f"{self.max_age_s:g} s window: refused as a possible replay (check both clocks)"
            )

    def _check_signature(self, header: str, delivery_id: str, timestamp: str, body: bytes) -> None:
        expected = _mac(self._secret, delivery_id, timestamp, body)
        given = [_digest(one) for one in header.split()]
        # Every candidate is compared, so the time taken says nothing about which matched.
        matched = [hmac.compare_digest(expected, one) for one in given if one is not None]
        if not any(matched):
            raise Unauthorized(
                f"{SIGNATURE_HEADER} does not match this delivery: the webhook's secret differs "
                "from BGSERVE_FOLLOW_WEBHOOK_SECRET, or the delivery was altered"
            )


def _header(headers: Mapping[str, str], name: str, shape: re.Pattern[str]) -> str:
    value = headers.get(name)
    if value is None:
        raise Unauthorized(f"{name} is missing: only signed MLflow webhook deliveries are taken")
    if not shape.fullmatch(value):
        raise Unauthorized(f"{name} is malformed")
    return value


def _digest(signature: str) -> bytes | None:
    version, _, encoded = signature.partition(",")
    if version != SIGNATURE_VERSION or not encoded:
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None


def _event(body: bytes) -> tuple[str, Mapping[str, Any]]:
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"the delivery's body is not JSON: {exc}", field="body") from exc
    if not isinstance(parsed, dict):
        raise InvalidInput("the delivery's body is not a JSON object", field="body")
    entity, action, data = parsed.get("entity"), parsed.get("action"), parsed.get("data")
    if not isinstance(entity, str) or not isinstance(action, str) or not isinstance(data, dict):
        raise InvalidInput(
            "the delivery is not an MLflow webhook event: it needs entity, action and data",
            field="body",
        )
    return f"{entity}.{action}", data
