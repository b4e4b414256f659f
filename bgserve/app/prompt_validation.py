"""Validate a candidate prompt on the live model before it takes any traffic.

The golden set is rendered with the live prompt (blue's) and with the candidate (a
``prompts:/`` URI, a raw template, or chat messages with their model_config and
response_format); both go through blue's *base model*, loaded here from the registry,
each side asked as its release's bundle would ask it (:mod:`bgserve.app.prompt_answers`),
and the answers are compared as blue against green, each side's checked against its own
response_format. Nothing is deployed and no traffic moves.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from bgserve.app.comparer import ComparerConfig
from bgserve.app.mlflow_log import ComparisonLogger, RunContext, golden_set_hash
from bgserve.app.ports import DeploymentReader, Releases
from bgserve.app.prompt_answers import LoadedModel, answer_case, load_base_model
from bgserve.app.prompt_candidate import Candidate, PromptKind, PromptSide
from bgserve.domain.release import Release
from bgserve.evaluation.comparison import (
    ComparisonReport,
    LoggedRun,
    SlotResult,
    Thresholds,
    compare,
)
from bgserve.evaluation.golden import GoldenCase, LintReport, refuse_client_messages
from bgserve.evaluation.response_schema import SchemaSides
from bgserve.evaluation.scorers import default_registry
from bgserve.registry.mlflow_registry import MlflowRegistry


class PromptValidation(BaseModel):
    """The live prompt against the candidate on the live model: lint plus comparison."""

    deployment: str
    model_uri: str
    live_prompt_uri: str
    candidate: str
    live_kind: PromptKind = Field(description="The live prompt's kind")
    candidate_kind: PromptKind = Field(description="The candidate's kind")
    lint: LintReport
    report: ComparisonReport


class PromptValidator:
    """Runs prompt validations; keeps the last base model loaded for the next call."""

    def __init__(
        self,
        settings: ComparerConfig,
        deployments: DeploymentReader,
        releases: Releases,
        registry: MlflowRegistry,
        logger: ComparisonLogger | None = None,
    ) -> None:
        self.settings = settings
        self.deployments = deployments
        self.releases = releases
        self.registry = registry
        self.logger = logger
        self._lock = threading.Lock()
        self._model: LoadedModel | None = None

    def validate(
        self,
        deployment: str,
        cases: list[GoldenCase],
        *,
        prompt_uri: str | None = None,
        template: str | None = None,
        messages: object = None,
        model_config: object = None,
        response_format: object = None,
        thresholds: dict[str, float] | None = None,
        golden_set: str = "inline",
    ) -> PromptValidation:
        """Lint the candidate against ``cases`` and compare it with the live prompt; the
        comparison is logged to MLflow as the golden comparisons are (a logging failure is
        in the report, never raised).

        The candidate is exactly one of ``prompt_uri``, ``template`` or ``messages`` (a
        chat prompt, with optional ``model_config`` and ``response_format``).

        Raises InvalidInput (no or several candidates, model_config or response_format
        without messages, bad messages, model_config or schema, a bad URI, a template
        without variables, a case with chat messages where a side is a text template or
        the base model is not an LLM), NotFound (deployment, prompt),
        RegistryUnavailable, UnsafeLlamaBuild.
        """
        candidate = Candidate(prompt_uri, template, messages, model_config, response_format)
        inline = candidate.inline()
        if inline is not None:  # refused before anything is read
            inline.refuse_client_messages(cases)
        live = self.releases.get_release(self.deployments.get_deployment(deployment).state.blue)
        live_side = PromptSide(
            self.registry.get_prompt_spec(live.prompt_name, live.prompt_version), live.prompt_uri
        )
        candidate_side = inline or candidate.read(self.registry)
        sides = (live_side, candidate_side)
        for side in sides:
            side.refuse_client_messages(cases)
        schemas = SchemaSides(live_side.schema(), candidate_side.schema())
        model = self._load(live.model_uri)
        if model.llm is None:
            refuse_client_messages(
                cases, f"{live.model_uri} is not an LLM: it takes one text, no client messages"
            )
        blue, green = (self._run(model, side, cases) for side in sides)
        limits = Thresholds().with_overrides(dict(self.settings.thresholds))
        scorer = default_registry().get(self.settings.scorer)
        report = compare(
            cases, blue, green, limits.with_overrides(thresholds), scorer, schemas=schemas
        )
        label = candidate_side.label
        report.mlflow = self._log(deployment, live, label, cases, golden_set, report)
        return PromptValidation(
            deployment=deployment,
            model_uri=live.model_uri,
            live_prompt_uri=live.prompt_uri,
            candidate=label,
            live_kind=live_side.kind,
            candidate_kind=candidate_side.kind,
            lint=candidate_side.lint(cases),
            report=report,
        )

    def _log(
        self,
        deployment: str,
        live: Release,
        candidate: str,
        cases: Sequence[GoldenCase],
        golden_set: str,
        report: ComparisonReport,
    ) -> LoggedRun | None:
        if self.logger is None:
            return None
        context = RunContext(
            deployment=deployment,
            kind="prompt-validation",
            golden_set=golden_set,
            golden_set_hash=golden_set_hash(cases),
            sides={"blue": _side(live, live.prompt_uri), "green": _side(live, candidate)},
        )
        title = f"{deployment}: live prompt vs {candidate} on {golden_set}"
        return self.logger.log(context, report, title)

    @staticmethod
    def _run(
        model: LoadedModel, side: PromptSide, cases: Sequence[GoldenCase]
    ) -> Mapping[str, SlotResult]:
        return {case.id: answer_case(model, side.spec, case) for case in cases}

    def _load(self, model_uri: str) -> LoadedModel:
        with self._lock:
            if self._model is None or self._model.uri != model_uri:
                self._model = load_base_model(model_uri, self.registry)
            return self._model


def _side(live: Release, prompt_uri: str) -> dict[str, str]:
    """One side of a prompt validation: the live model with ``prompt_uri``."""
    return {
        "release": str(live.id),
        "release_name": live.name,
        "model_uri": live.model_uri,
        "prompt_uri": prompt_uri,
    }
