"""Promotion plan defaults (``settings.plan``) and shadow traffic (``settings.shadow``).

Flat variables as ever: ``BGSERVE_PLAN_<FIELD>`` (and the older ``BGSERVE_PROMOTE_STEPS``,
``BGSERVE_PROMOTE_STEP_PAUSE_SECONDS``) and ``BGSERVE_SHADOW_<FIELD>``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, model_validator

from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.plan import make_plan
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

    @model_validator(mode="after")
    def _a_plan_the_domain_accepts(self) -> PlanGroup:
        # The domain's plan constructor is the one rule; its field names the variable.
        try:
            make_plan(self.steps, self.bake_s, self.analysis())
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
        )


class ShadowGroup(Group):
    """How mirrored traffic is collected, scored and kept (``BGSERVE_SHADOW_*``)."""

    model_config = spelt_flat("shadow_")

    store_inputs: bool = Field(
        True,
        description="Keep the inputs and both answers of the most different and most recent "
        "mirrored pairs in the shadow report; false keeps scores only (sensitive traffic).",
    )
    min_pairs: int = Field(
        50, ge=1, description="Mirrored pairs a shadow report needs before it gates promotion."
    )
    keep_pairs: int = Field(
        10, ge=0, le=1000, description="Most different and most recent pairs a shadow report keeps."
    )
    queue: int = Field(
        256, ge=1, description="Mirror copies waiting for green before new ones are dropped."
    )
    green_nice: int = Field(
        19,
        ge=0,
        le=19,
        description="Nice value of a local green slot while it only answers mirrored copies, "
        "so they never take CPU time from the answers clients wait for; 0 keeps green's "
        "priority (its shadow latencies are then comparable with blue's on a busy machine).",
    )
    interval_seconds: float = Field(
        0.5, gt=0, le=10, description="How often mirrored pairs are collected and scored."
    )
