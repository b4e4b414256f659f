"""Settings, read from the environment (prefix ``BGSERVE_``) and validated at start-up.

bgserve also honours MLflow's own ``MLFLOW_TRACKING_URI`` and ``MLFLOW_REGISTRY_URI``.
An unsafe or inconsistent configuration stops bgserve before it binds a port.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path.home() / ".bgserve"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Every knob bgserve has. Each field documents itself; ``bgserve serve --help`` shows a few."""

    model_config = SettingsConfigDict(env_prefix="BGSERVE_", extra="ignore")

    home: Path = Field(DEFAULT_HOME, description="Directory for bgserve's own files.")
    state_url: str = Field(
        "",
        description="SQLAlchemy URL of the state database; empty means a SQLite file in `home`.",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("BGSERVE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking store; MLflow's own default when unset.",
    )
    mlflow_registry_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("BGSERVE_MLFLOW_REGISTRY_URI", "MLFLOW_REGISTRY_URI"),
        description="MLflow model/prompt registry; the tracking URI when unset.",
    )
    host: str = Field("127.0.0.1", description="Bind address of the control API.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the control API.")
    data_host: str = Field("127.0.0.1", description="Bind address of the local data plane.")
    data_port: int = Field(8081, ge=0, le=65535, description="Port of the local data plane.")
    backend: Literal["local", "kserve", "seldon"] = Field(
        "local", description="Where slots run: embedded processes, KServe or Seldon."
    )
    promote_steps: list[int] = Field(
        default_factory=lambda: [10, 50, 100],
        description="Green weights that `promote {}` walks through, ending at 100.",
    )
    promote_step_pause_seconds: float = Field(
        2.0, ge=0, description="Pause between two steps of the promotion plan."
    )
    slot_ready_timeout_seconds: float = Field(
        120.0, gt=0, description="How long a new slot may take to report ready."
    )
    lock_timeout_seconds: float = Field(
        30.0, gt=0, description="How long an operation waits for another on the same deployment."
    )
    bundle_name_template: str = Field(
        "bgserve.{release}",
        description="Registered model name of a release's bundle; `{release}` is the release name.",
    )
    auth_tokens: str = Field(
        "", description="Comma-separated `role:token` pairs; roles are viewer, deployer, admin."
    )
    auth_tokens_file: Path | None = Field(
        None, description="File of `role:token` lines (`role:sha256:<hex>` for hashed tokens)."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest request body the control API accepts."
    )

    @field_validator("promote_steps")
    @classmethod
    def _steps_climb_to_100(cls, steps: list[int]) -> list[int]:
        if not steps or steps[-1] != 100:
            raise ValueError("promote_steps must end at 100, e.g. [10, 50, 100]")
        if any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)):
            raise ValueError("promote_steps must be strictly increasing weights in 1..100")
        return steps

    @model_validator(mode="after")
    def _refuse_open_bind_without_tokens(self) -> Settings:
        if not _is_loopback(self.host) and not (self.auth_tokens or self.auth_tokens_file):
            raise ValueError(
                f"refusing to bind the control API on {self.host} without auth tokens: "
                "set BGSERVE_AUTH_TOKENS or BGSERVE_AUTH_TOKENS_FILE, or bind 127.0.0.1"
            )
        return self

    @property
    def resolved_state_url(self) -> str:
        """The state database URL, defaulting to ``sqlite:///<home>/state.db``."""
        return self.state_url or f"sqlite:///{self.home / 'state.db'}"
