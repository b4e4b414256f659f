"""Settings, read from the environment (prefix ``BGSERVE_``) and validated at start-up.

bgserve also honours MLflow's own ``MLFLOW_TRACKING_URI`` and ``MLFLOW_REGISTRY_URI``.
An unsafe or inconsistent configuration stops bgserve before it binds a port.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    Field,
    PositiveFloat,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

from bgserve.settings.cloud import AzureMLGroup, DatabricksGroup, SageMakerGroup, VertexGroup
from bgserve.settings.compare import CompareGroup, JudgeGroup
from bgserve.settings.control import ControlGroup
from bgserve.settings.follow import FollowGroup
from bgserve.settings.groups import ENV_PREFIX, FlatSettings, Group
from bgserve.settings.kube import KServeGroup, KubeGroup, PrometheusGroup, SeldonGroup
from bgserve.settings.leader import LeaderGroup
from bgserve.settings.rollout import PlanGroup
from bgserve.settings.shadow import ShadowGroup

__all__ = [
    "AzureMLGroup",
    "CompareGroup",
    "ControlGroup",
    "DatabricksGroup",
    "FollowGroup",
    "Group",
    "JudgeGroup",
    "KServeGroup",
    "KubeGroup",
    "LeaderGroup",
    "PlanGroup",
    "PrometheusGroup",
    "SageMakerGroup",
    "SeldonGroup",
    "Settings",
    "ShadowGroup",
    "VertexGroup",
]

DEFAULT_HOME = Path.home() / ".bgserve"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(FlatSettings):
    """Every knob bgserve has, grouped by topic (``settings.kube``, ``settings.leader``,
    ``settings.compare``, ``settings.plan``, ``settings.shadow``, ``settings.control``,
    ``settings.follow``).
    Each field documents itself; ``bgserve serve --help`` shows a few.

    Every variable keeps its flat name (``BGSERVE_KUBE_NAMESPACE`` is
    ``settings.kube.namespace``), and the constructor takes flat names too
    (``Settings(kube_namespace="ml")``).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    home: Path = Field(DEFAULT_HOME, description="Directory for bgserve's own files.")
    state_url: str = Field(
        "",
        description="SQLAlchemy URL of the state database; empty means a SQLite file in `home`.",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("BGSERVE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking store; the SQLite file `mlflow.db` in `home` when unset "
        "(the same for `serve`, `quickstart`, `prompts push` and the slots).",
    )
    mlflow_registry_uri: str | None = Field(
        None,
        validation_alias=AliasChoices("BGSERVE_MLFLOW_REGISTRY_URI", "MLFLOW_REGISTRY_URI"),
        description="MLflow model/prompt registry; the tracking URI when unset.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info",
        description="Level of bgserve's own log; MLflow's loggers stay at warning (and its "
        "progress prints silent) unless this is `debug`.",
    )
    host: str = Field("127.0.0.1", description="Bind address of the control API.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the control API.")
    data_host: str = Field("127.0.0.1", description="Bind address of the local data plane.")
    data_port: int = Field(8081, ge=0, le=65535, description="Port of the local data plane.")
    data_token: str = Field(
        "",
        description="Bearer token every data-plane request but /v2/health/* must carry "
        "(`Authorization: Bearer <token>`); empty means the data plane needs none.",
    )
    sticky_header: str = Field(
        "x-bgserve-key",
        pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        description="Request header whose value pins a caller to one slot of the local "
        "data plane (sticky cohorts: the same key keeps its release at a given weight and "
        "only moves blue to green as green's weight rises); requests without it are "
        "spread by weight.",
    )
    data_allow_unauthenticated: bool = Field(
        False,
        description="Allow a non-loopback `data_host` without `data_token`, for a data plane "
        "reachable only through the platform's authenticating gateway.",
    )
    upstream_connect_timeout_seconds: float = Field(
        1.0,
        gt=0,
        description="How long the data plane waits to open a connection to a slot; slots "
        "are on this machine, so anything slower means a full backlog or a hung slot.",
    )
    upstream_first_byte_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="How long the data plane waits for a slot's answer to begin; raise it "
        "for models slower than this per request. A client waits at most twice "
        "(connect + first-byte timeouts) for its first byte: one retry on another slot.",
    )
    upstream_timeout_seconds: float = Field(
        300.0, gt=0, description="How long the data plane waits for a slot's whole answer."
    )
    upstream_stream_idle_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="How long the data plane waits between two pieces of an answer that "
        "has begun (a streamed chat completion's chunks); a slot silent for longer has its "
        "answer cut, and the failure counts towards its ejection.",
    )
    deployment_timeouts: dict[str, tuple[PositiveFloat | None, PositiveFloat | None]] = Field(
        default_factory=dict,
        description="Per-deployment `[first_byte_s, idle_s]` for the local data plane "
        '(null keeps the default), e.g. `{"chat": [120, 30]}` for an LLM whose unstreamed '
        "answer takes longer than `upstream_first_byte_timeout_seconds`.",
    )
    outlier_consecutive_failures: int = Field(
        3,
        ge=1,
        description="Consecutive failures (timeouts, lost connections) after which the data "
        "plane ejects a slot until it answers a readiness probe; a refused connection "
        "ejects at once.",
    )
    backend: Literal[
        "local", "kserve", "seldon", "sagemaker", "azureml", "databricks", "vertex", "memory"
    ] = Field(
        "local",
        description="Where slots run: embedded processes, KServe, Seldon, a SageMaker "
        "endpoint, an Azure ML managed online endpoint, a Databricks serving endpoint or a "
        "Vertex AI endpoint; `memory` keeps slots as in-memory records that serve nothing "
        "(for tests and trying the API).",
    )
    engine_interval_seconds: float = Field(
        0.25, gt=0, le=10, description="How often the rollout engine looks at running plans."
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
        None,
        description="File of `role:token` lines (`role:sha256:<hex>` for hashed tokens); "
        "`#` starts a comment. A file that cannot be read or holds no token stops bgserve.",
    )
    public_metrics_and_docs: bool = Field(
        False,
        description="Serve /metrics, /docs, /redoc and /openapi.json without a token even when "
        "tokens are configured (they need a viewer token otherwise); /healthz and /readyz are "
        "always open.",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Largest request body the control API accepts."
    )
    prompts_dir: Path = Field(
        Path("prompts"),
        description="Where golden sets live: `<prompts_dir>/<name>/golden.jsonl` (the demo's "
        "own sets are found too).",
    )
    llm_gguf_dirs: list[Path] = Field(
        default_factory=list,
        description="Directories (a JSON list) under which `POST /models/llm` accepts a GGUF "
        "path on this machine, symlinks and `..` resolved; empty means the API refuses GGUF "
        "paths (the CLI, running with the user's own rights, is not limited).",
    )
    llm_threads: int = Field(
        0,
        ge=0,
        description="Threads each local GGUF slot gives llama.cpp, for generation and for "
        "reading the prompt alike, over the `n_threads` a model was registered with; 0: "
        "that count, else half the CPUs the slot may run on (at least 1), so a rollout's "
        "two slots fill the machine without taking turns on it (llama.cpp's threads wait "
        "for each other by spinning: with more threads than free cores each answer took "
        "3x the CPU here).",
    )
    control: ControlGroup = Field(default_factory=ControlGroup)
    kube: KubeGroup = Field(default_factory=KubeGroup)
    sagemaker: SageMakerGroup = Field(default_factory=SageMakerGroup)
    azureml: AzureMLGroup = Field(default_factory=AzureMLGroup)
    databricks: DatabricksGroup = Field(default_factory=DatabricksGroup)
    vertex: VertexGroup = Field(default_factory=VertexGroup)
    leader: LeaderGroup = Field(default_factory=LeaderGroup)
    compare: CompareGroup = Field(default_factory=CompareGroup)
    plan: PlanGroup = Field(default_factory=PlanGroup)
    shadow: ShadowGroup = Field(default_factory=ShadowGroup)
    follow: FollowGroup = Field(default_factory=FollowGroup)

    # --- reliability ---
    slot_restart_limit: int = Field(
        5,
        ge=0,
        description="Restarts of one dead slot within `slot_restart_window_seconds` before "
        "bgserve stops restarting it (a crash loop); the history records it.",
    )
    slot_restart_window_seconds: float = Field(
        300.0, gt=0, description="The window `slot_restart_limit` counts restarts in."
    )
    mlflow_http_max_retries: int = Field(
        2,
        ge=0,
        le=10,
        description="Retries of one MLflow HTTP request by bgserve (MLflow's own default is 7, "
        "minutes of backoff); MLFLOW_HTTP_REQUEST_MAX_RETRIES wins when set.",
    )
    mlflow_http_timeout_seconds: int = Field(
        10,
        gt=0,
        description="Timeout of one MLflow HTTP request by bgserve (MLflow's default is 120); "
        "MLFLOW_HTTP_REQUEST_TIMEOUT wins when set.",
    )
    mlflow_http_backoff_factor: int = Field(
        0,
        ge=0,
        le=10,
        description="Backoff factor in seconds between MLflow HTTP retries (MLflow's default "
        "is 2, growing exponentially); MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR wins when set.",
    )

    @field_validator("auth_tokens")
    @classmethod
    def _tokens_given_or_unset(cls, tokens: str) -> str:
        # A configured but empty value (",", " ") must not silently mean "no auth".
        if tokens and not any(t.strip() for t in tokens.split(",")):
            raise ValueError(
                "BGSERVE_AUTH_TOKENS is set but holds no token: give `role:token` pairs "
                "separated by commas, or unset it"
            )
        return tokens

    @model_validator(mode="after")
    def _refuse_open_bind_without_tokens(self) -> Settings:
        if not _is_loopback(self.host) and not (self.auth_tokens or self.auth_tokens_file):
            raise ValueError(
                f"refusing to bind the control API on {self.host} without auth tokens: "
                "set BGSERVE_AUTH_TOKENS or BGSERVE_AUTH_TOKENS_FILE, or bind 127.0.0.1"
            )
        return self

    @model_validator(mode="after")
    def _refuse_open_data_plane_without_token(self) -> Settings:
        if self.backend != "local" or _is_loopback(self.data_host) or self.data_token:
            return self
        if not self.data_allow_unauthenticated:
            raise ValueError(
                f"refusing to bind the data plane on {self.data_host} without a token: set "
                "BGSERVE_DATA_TOKEN, or BGSERVE_DATA_ALLOW_UNAUTHENTICATED=true if only the "
                "platform's authenticating gateway can reach it, or bind 127.0.0.1"
            )
        return self

    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        """The MLflow tracking URI, defaulting to ``sqlite:///<home>/mlflow.db``."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def resolved_state_url(self) -> str:
        """The state database URL, defaulting to ``sqlite:///<home>/state.db``."""
        return self.state_url or f"sqlite:///{self.home / 'state.db'}"
