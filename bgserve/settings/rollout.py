"""Promotion plan defaults (``settings.plan``); shadow traffic's are in
:mod:`bgserve.settings.shadow`.

Flat variables as ever: ``BGSERVE_PLAN_<FIELD>`` (and the older ``BGSERVE_PROMOTE_STEPS``,
``BGSERVE_PROMOTE_STEP_PAUSE_SECONDS``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, model_validator

from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.plan import Plan, make_plan
from bgserve.domain.plan_rules import Warmup
from bgserve.errors import InvalidInput
from bgserve.settings.groups import ENV_PREFIX, Group, spelt_flat


class PlanGroup(Group):
    """The default promotion plan and its live analysis (a request may override them)."""

    model_config = spelt_flat("plan_")

    steps: list[int] = Field(
        default_factory=lambda: [10, 50, 100],
        validation_alias=AliasChoices("plan_steps", "steps", "promote_steps"),
        description="Green weights a plan walks through, ending at 100 (the cutover).",
    )
    bake_s: float = Field(
        30.0,
        validation_alias=AliasChoices("plan_bake_s", "bake_s", "promote_step_pause_seconds"),
        description="How long each step bakes before green is analysed against blue.",
    )
    min_requests: int = Field(
        50, description="Requests each side needs in a bake before a check can decide."
    )
    max_error_rate_delta: float = Field(
        0.01, description="How much higher green's error rate may be than blue's."
    )
    significance: float = Field(
        0.05, description="p-value below which a worse error rate is believed."
    )
    max_latency_p95_ratio: float = Field(
        1.5, description="How many times blue's p95 latency green's may reach."
    )
    max_bake_s: float = Field(
        300.0, description="How long a step may bake while the analysis is inconclusive."
    )
    on_inconclusive: Literal["hold", "revert", "continue"] = Field(
        "hold", description="What a step still inconclusive at `plan_max_bake_s` does."
    )
    initial_delay_s: float = Field(
        2.0,
        description="Seconds at the start of each step that no analysis counts: "
        "connections, caches and the new share settle first.",
    )
    min_latency_delta_ms: float = Field(
        10.0,
        description="The latency check fails only when green's p95 is also this many ms "
        "above blue's (an absolute floor beside the ratio); raise it for LLMs (e.g. 250).",
    )
    min_ttft_delta_ms: float = Field(
        50.0, description="The same floor for the p95 time to first token of streams."
    )
    min_tpot_delta_ms: float = Field(
        2.0, description="The same floor for the median time per output token of streams."
    )
    warmup_requests: int = Field(
        20,
        description="Requests sent to green (the last comparison's inputs) before a plan's "
        "first step, which no analysis counts; 0 turns the warm-up off.",
    )
    warmup_timeout_s: float = Field(
        30.0, description="How long a warm-up may take at most before the first step goes on."
    )
    compare_with: Literal["blue", "baseline"] = Field(
        "blue",
        description="What green is analysed against: blue, or a baseline (a fresh slot of "
        "blue's release started with the plan and given green's share).",
    )

    @model_validator(mode="after")
    def _a_plan_the_domain_accepts(self) -> PlanGroup:
        # The domain's plan constructor is the one rule; its field names the variable.
        try:
            self.plan()
        except InvalidInput as exc:
            name = (exc.field or "plan").replace("analysis.", "").replace(".", "_").upper()
            raise ValueError(f"{ENV_PREFIX}{name}: {exc.message}") from exc
        return self

    def analysis(self) -> AnalysisSettings:
        """The default live analysis of a plan."""
        return AnalysisSettings(
            min_requests=self.min_requests,
            max_error_rate_delta=self.max_error_rate_delta,
            significance=self.significance,
            max_latency_p95_ratio=self.max_latency_p95_ratio,
            max_bake_s=self.max_bake_s,
            on_inconclusive=self.on_inconclusive,
            initial_delay_s=self.initial_delay_s,
            min_latency_delta_ms=self.min_latency_delta_ms,
            min_ttft_delta_ms=self.min_ttft_delta_ms,
            min_tpot_delta_ms=self.min_tpot_delta_ms,
        )

    def plan(self) -> Plan:
        """The plan ``promote {}`` runs. Raises InvalidInput naming the field at fault."""
        warmup = Warmup(self.warmup_requests, self.warmup_timeout_s)
        return make_plan(
            self.steps, self.bake_s, self.analysis(), warmup=warmup, compare_with=self.compare_with
        )
