"""Golden comparison settings: concurrency, thresholds, warm-up, MLflow logging, the judge.

A group of :class:`bgserve.settings.Settings`, kept apart so the settings read by topic;
the fields are Settings' own (same ``BGSERVE_`` variables, same validation).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ComparisonSettings(BaseModel):
    """How blue and green are compared on a golden set, and where comparisons are logged."""

    compare_concurrency: int = Field(
        8, ge=1, le=256, description="Golden cases in flight at once during a comparison."
    )
    compare_timeout_seconds: float = Field(
        30.0, gt=0, description="Timeout of one request to a slot during a comparison."
    )
    compare_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description='Threshold overrides as JSON, e.g. {"min_mean_similarity": 0.95}; '
        "a request's own `thresholds` apply on top.",
    )
    compare_scorer: str = Field("text", description="Similarity scorer: `text` or `exact`.")
    compare_warmup_calls: int = Field(
        2, ge=0, le=20, description="Unmeasured calls each slot gets before a comparison."
    )
    compare_latency_repeats: int = Field(
        3,
        ge=1,
        le=20,
        description="Calls of each probed case a side; its median is the case's latency.",
    )
    compare_latency_cases: int = Field(
        20, ge=0, description="How many of the first golden cases the latency probe repeats."
    )
    compare_price_per_1k_tokens: float | None = Field(
        None, ge=0, description="Price of 1,000 output tokens: shows cost a request."
    )
    compare_log_to_mlflow: bool = Field(
        True, description="Log each comparison as a run in the experiment `bgserve/<name>`."
    )
    compare_mlflow_tracking_uri: str | None = Field(
        None, description="Where comparisons are logged; bgserve's tracking URI when unset."
    )
    compare_mlflow_ui_url: str | None = Field(
        None, description="MLflow UI base URL for run links (an http tracking URI is its own)."
    )
    compare_mlflow_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest a comparison waits for its MLflow logging."
    )
    compare_scorer_modules: list[str] = Field(
        default_factory=list,
        description="Importable modules whose mlflow.genai Scorer objects golden cases and "
        'requests may name (JSON list, e.g. ["myteam.scorers"]).',
    )
    compare_judge_url: str | None = Field(
        None,
        description="OpenAI-compatible API base of the pairwise judge (e.g. .../v1); "
        "`/chat/completions` is appended. A bgserve deployment works: "
        "`http://<router>/openai/v1` with the deployment's name as the model.",
    )
    compare_judge_model: str = Field(
        "", description="Model the judge endpoint runs (for a bgserve deployment, its name)."
    )
    compare_judge_variables: dict[str, str] | None = Field(
        None,
        description="JSON object sent as `variables` in each judge request: the template "
        "variables of a bgserve judge deployment's prompt. Unset: not sent.",
    )
    compare_judge_api_key_env: str = Field(
        "BGSERVE_JUDGE_API_KEY", description="Environment variable holding the judge's API key."
    )
    compare_judge_rubric: str | None = Field(
        None, description="What makes an answer better, for the judge; a general rubric if unset."
    )
    compare_judge_both_orders: bool = Field(
        False, description="Ask the judge each case in both orders, to cancel position bias."
    )
