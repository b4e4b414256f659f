"""POST /deployments/{name}/compare and GET /deployments/{name}/comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field, model_validator

from bgserve.api.deps import DeployerDep, ServiceDep, ViewerDep
from bgserve.api.guard import GuardedRoute
from bgserve.api.schemas import READ_ONE, WRITE, DeploymentName, Strict
from bgserve.app.comparer import CompareOptions
from bgserve.app.golden_sets import load_golden_set
from bgserve.compose import Components
from bgserve.domain.golden import GoldenCase, parse_cases
from bgserve.errors import InvalidInput, NotFound

router = APIRouter(prefix="/deployments", tags=["comparison"], route_class=GuardedRoute)


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


def cases_of(body: GoldenSource, prompts_dir: Path) -> list[GoldenCase]:
    """The golden cases ``body`` names or carries. Raises InvalidInput, NotFound, 413."""
    if body.cases is not None:
        if not body.cases:
            raise InvalidInput("cases is empty: give at least one golden case", field="cases")
        return parse_cases(body.cases)
    assert body.golden_set is not None
    return load_golden_set(body.golden_set, prompts_dir)


@router.post("/{name}/compare", responses=WRITE)
def compare(
    name: DeploymentName,
    body: CompareRequest,
    request: Request,
    who: DeployerDep,
) -> dict[str, Any]:
    """Run the golden set on blue and green directly; the verdict gates promotion."""
    parts: Components = request.app.state.components
    cases = cases_of(body, parts.settings.prompts_dir)
    options = CompareOptions(
        thresholds=body.thresholds,
        golden_set=body.golden_set or "inline",
        scorers=tuple(body.scorers),
        judge=body.judge,
        judge_rubric=body.judge_rubric,
    )
    _, report = parts.comparer.compare(name, cases, who.name, options=options)
    return report.model_dump(mode="json")


@router.get("/{name}/comparison", responses=READ_ONE)
def last_comparison(name: DeploymentName, service: ServiceDep, _who: ViewerDep) -> dict[str, Any]:
    """The full report of the deployment's last comparison."""
    stored = service.get_deployment(name)
    if stored.last_comparison is None:
        raise NotFound(f"{name} has no comparison yet: compare blue and green", hint="compare")
    return stored.last_comparison
