"""The bodies that carry a golden set: a comparison's and a prompt validation's."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from bgserve.api.schemas import Strict
from bgserve.app.comparer import CompareOptions


class GoldenSource(Strict):
    """A golden set given by name or inline, with optional threshold overrides."""

    golden_set: str | None = Field(
        None, description="Name of prompts/<name>/golden.jsonl", examples=["summarize"]
    )
    cases: list[dict[str, Any]] | None = Field(
        None, description="Inline golden cases, in the golden.jsonl format"
    )
    thresholds: dict[str, float] | None = Field(
        None, description="Overrides of the default thresholds for this comparison"
    )

    @model_validator(mode="after")
    def _one_source(self) -> GoldenSource:
        if (self.golden_set is None) == (self.cases is None):
            raise ValueError("give exactly one of golden_set (a name) or cases (a list)")
        return self


class CompareRequest(GoldenSource):
    """A golden set, thresholds, and the optional quality signals of this comparison."""

    scorers: list[str] = Field(
        default_factory=list,
        description="MLflow scorers (from compare_scorer_modules) run on every case",
        examples=[["is_concise"]],
    )
    judge: bool | None = Field(
        None,
        description="The pairwise LLM judge: omitted runs it when configured, false skips "
        "it, true requires it",
    )
    judge_rubric: str | None = Field(
        None, description="The judge's rubric for this comparison instead of the configured one"
    )

    def options(self) -> CompareOptions:
        """What this request asks of the comparer beyond the cases."""
        return CompareOptions(
            thresholds=self.thresholds,
            golden_set=self.golden_set or "inline",
            scorers=tuple(self.scorers),
            judge=self.judge,
            judge_rubric=self.judge_rubric,
        )
