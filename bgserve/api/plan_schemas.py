"""The promotion plan in the control API: the request's ``plan`` and the deployment's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.plan import Plan, make_plan
from bgserve.domain.plan_rules import MAX_DURATION_S, MAX_WARMUP_REQUESTS, Warmup

Number = float  # strict: ints are taken, strings and booleans refused
MAX_S = MAX_DURATION_S  # 30 days: longer durations are refused (422), not stored
CheckName = Literal["error_rate", "latency_p50", "latency_p95", "ttft_p95", "tpot", "output_tokens"]


class StrictBody(BaseModel):
    """Like ``schemas.Strict`` (which imports this module): no unknown field, strict types."""

    model_config = ConfigDict(extra="forbid", strict=True)


class AnalysisRequest(StrictBody):
    """Live-analysis thresholds of one plan; what is left out comes from settings."""

    min_requests: StrictInt | None = Field(
        None, ge=1, description="Requests each side needs in a bake before a check decides"
    )
    max_error_rate_delta: Number | None = Field(
        None, ge=0, le=1, description="How much higher green's error rate may be than blue's"
    )
    significance: Number | None = Field(
        None, gt=0, lt=1, description="p-value below which a worse error rate is believed"
    )
    max_latency_p95_ratio: Number | None = Field(
        None, gt=0, description="How many times blue's p95 latency green's may reach"
    )
    max_bake_s: Number | None = Field(
        None,
        ge=0,
        le=MAX_S,
        description="How long an inconclusive step may bake before on_inconclusive",
    )
    initial_delay_s: Number | None = Field(
        None, ge=0, le=MAX_S, description="Seconds at the start of each step no analysis counts"
    )
    min_latency_delta_ms: Number | None = Field(
        None,
        ge=0,
        le=MAX_S * 1000,
        description="The latency check fails only when green's p95 is also this many ms "
        "above blue's",
    )
    min_ttft_delta_ms: Number | None = Field(
        None, ge=0, le=MAX_S * 1000, description="The same floor for the p95 time to first token"
    )
    min_tpot_delta_ms: Number | None = Field(
        None,
        ge=0,
        le=MAX_S * 1000,
        description="The same floor for the median time per output token",
    )
    on_inconclusive: Literal["hold", "revert", "continue"] | None = Field(
        None, description="What a step still inconclusive at max_bake_s does"
    )
    checks: list[CheckName] | None = Field(
        None,
        min_length=1,
        description="The checks each bake runs (default error_rate, latency_p50 and latency_p95); "
        "ttft_p95, tpot and output_tokens judge streamed chat completions",
        examples=[["error_rate", "ttft_p95", "tpot", "output_tokens"]],
    )
    max_ttft_p95_ratio: Number | None = Field(
        None, gt=0, description="How many times blue's p95 time to first token green's may reach"
    )
    max_tpot_ratio: Number | None = Field(
        None,
        gt=0,
        description="How many times blue's median time per output token green's may reach",
    )
    max_output_tokens_ratio: Number | None = Field(
        None,
        gt=0,
        description="How many times blue's mean output tokens per answer green's may reach",
    )


class WarmupRequest(StrictBody):
    """Green's warm-up before the first step; what is left out comes from settings."""

    requests: StrictInt | None = Field(
        None,
        ge=0,
        le=MAX_WARMUP_REQUESTS,
        description="Requests sent to green (no analysis counts them); 0 turns it off",
    )
    timeout_s: Number | None = Field(
        None, ge=0, le=MAX_S, description="How long the warm-up may take at most"
    )


class PlanRequest(StrictBody):
    """A promotion plan; what is left out comes from settings (``BGSERVE_PLAN_*``)."""

    steps: list[StrictInt] | None = Field(
        None, description="Increasing green weights ending at 100", examples=[[10, 50, 100]]
    )
    bake_s: Number | None = Field(
        None, ge=0, le=MAX_S, description="Bake time of each step, seconds (at most 30 days)"
    )
    analysis: AnalysisRequest | None = None
    warmup: WarmupRequest | None = None
    compare_with: Literal["blue", "baseline"] | None = Field(
        None,
        description="What green is analysed against: blue, or a baseline (a fresh slot of "
        "blue's release started with the plan, given green's share; steps before 100 at "
        "most 50)",
    )

    def to_plan(self, default: Plan) -> Plan:
        """The plan this request asks for, over ``default``. Raises InvalidInput."""
        overrides = self.analysis.model_dump(exclude_none=True) if self.analysis else {}
        analysis = AnalysisSettings(**{**default.analysis.__dict__, **overrides})
        steps = self.steps if self.steps is not None else list(default.steps)
        bake_s = float(self.bake_s) if self.bake_s is not None else default.bake_s
        warmup_overrides = self.warmup.model_dump(exclude_none=True) if self.warmup else {}
        warmup = Warmup(**{**default.warmup.__dict__, **warmup_overrides})
        compare_with = self.compare_with or default.compare_with
        return make_plan(steps, bake_s, analysis, warmup=warmup, compare_with=compare_with)


class PlanOut(BaseModel):
    """A plan under way: its steps, where it stands, and the analyses so far."""

    steps: list[int]
    step_index: int
    weight: int = Field(description="The current step's green weight")
    bake_s: float
    bake_until: datetime | None = Field(description="When the current step's bake ends")
    held: str | None = Field(description="Why the plan waits for an operator, if it does")
    warming_up: bool = Field(description="True while green is warmed up before the first step")
    compare_with: str = Field(description="What green is analysed against: blue or baseline")
    baseline_release: int | None = Field(
        description="The baseline's release id (a copy of blue's), when the plan runs one"
    )
    force: bool
    analysis: list[dict[str, Any]] = Field(description="The analyses so far, the latest last")
    settings: dict[str, Any] = Field(description="The plan's analysis thresholds")

    @classmethod
    def of(cls, plan: Plan | None) -> PlanOut | None:
        """The body of ``plan`` (None when no plan runs)."""
        if plan is None:
            return None
        return cls(
            steps=list(plan.steps),
            step_index=plan.step_index,
            weight=plan.weight,
            bake_s=plan.bake_s,
            bake_until=moment(plan.bake_until),
            held=plan.held or None,
            warming_up=plan.needs_warmup,
            compare_with=plan.compare_with,
            baseline_release=plan.baseline_release,
            force=plan.force,
            analysis=[dict(a) for a in plan.analyses],
            settings={**plan.analysis.__dict__, "warmup": dict(plan.warmup.__dict__)},
        )


def moment(epoch: float | None) -> datetime | None:
    """``epoch`` as a time; None when there is none or it cannot be one (a plan stored
    before durations were capped must not break a listing, a page or a view)."""
    if epoch is None:
        return None
    try:
        return datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, OSError, ValueError):
        return None
