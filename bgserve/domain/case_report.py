"""One golden case as compared: what each slot answered, and the case's report. Pure data.

Kept apart from :mod:`bgserve.domain.comparison` (which scores and decides) so the summary
(:mod:`bgserve.domain.golden_summary`) can read reports without importing the comparison.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from bgserve.domain.assertions import AssertionResult
from bgserve.domain.judging import Judgement


class SlotResult(BaseModel):
    """What one slot answered to one case; ``error`` set means no usable answer.

    ``output_tokens`` is the model's own count when the slot reported it; ``probe_ms``
    holds the latencies of repeated calls of the case (the first answer's included),
    whose median stands for the case in the latency check; ``scores`` are the MLflow
    scorers' values on this answer (None for a scorer that failed).
    """

    output: str | None = None
    latency_ms: float = Field(ge=0)
    error: str | None = None
    output_tokens: int | None = Field(None, ge=0)
    probe_ms: tuple[float, ...] = ()
    scores: dict[str, float | None] = Field(default_factory=dict)


class SlotReport(BaseModel):
    """One slot's answer to a case and its assertion results."""

    output: str | None
    latency_ms: float
    error: str | None
    assertions: list[AssertionResult]
    output_tokens: int | None = None
    tokens_reported: bool = False
    probe_ms: list[float] = Field(default_factory=list)
    scores: dict[str, float | None] = Field(default_factory=dict)
    schema_problem: str | None = None
    """Why the answer does not match the prompt's response_format (None: it does, or
    there is no schema; see ``schema_checked``)."""
    schema_checked: bool = False

    @property
    def answered(self) -> bool:
        """True when the slot gave an output (an empty one counts) without error."""
        return self.error is None


class CaseReport(BaseModel):
    """One case, both answers, how they compare, and what is wrong (``problems``)."""

    id: str
    inputs: dict[str, str]
    expected: str | None
    blue: SlotReport
    green: SlotReport
    exact_match: bool
    similarity: float | None
    differs: bool
    regressed: bool
    problems: list[str]
    judge: Judgement | None = None

    @property
    def failing(self) -> bool:
        """True when the case has at least one problem; such cases are shown first."""
        return bool(self.problems)
