"""Follow rules (``settings.follow``): MLflow webhook deliveries and registry polling.
Flat variables ``BGSERVE_FOLLOW_<FIELD>``."""

from __future__ import annotations

from pydantic import Field, field_validator

from bgserve.settings.groups import Group, spelt_flat

MIN_SECRET_LENGTH = 16


class FollowGroup(Group):
    """How bgserve learns that a followed MLflow alias moved (``BGSERVE_FOLLOW_*``)."""

    model_config = spelt_flat("follow_")

    webhook_secret: str = Field(
        "",
        description="The secret of the MLflow webhook that calls `POST /follow/webhook`; "
        "deliveries are checked against its HMAC-SHA256 signature. Empty: the endpoint "
        "refuses every delivery (follow rules then learn of moves by polling).",
    )
    webhook_max_age_seconds: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="How far a delivery's timestamp may be from this server's clock, either "
        "way; an older delivery is refused as a possible replay.",
    )
    webhook_max_bytes: int = Field(
        65536,
        ge=1024,
        le=8 * 1024 * 1024,
        description="Largest webhook delivery accepted (an alias event is about 200 bytes).",
    )
    poll_seconds: float = Field(
        30.0,
        ge=0,
        description="How often the leader reads the followed aliases from the registry, for "
        "MLflow setups without webhooks and to catch a missed delivery; 0 turns polling off.",
    )
    retry_seconds: float = Field(
        30.0,
        gt=0,
        description="Wait after a failed attempt (MLflow or a slot down) before the next; "
        "it doubles with each failure in a row, up to 10 minutes.",
    )
    public_url: str = Field(
        "",
        description="This bgserve's URL as people reach it, for the report link written on "
        "prompt versions when MLflow's own run link is unknown.",
    )

    @field_validator("webhook_secret")
    @classmethod
    def _a_secret_worth_the_name(cls, secret: str) -> str:
        if secret and len(secret) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"BGSERVE_FOLLOW_WEBHOOK_SECRET must be at least {MIN_SECRET_LENGTH} characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return secret
