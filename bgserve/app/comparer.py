"""The I/O half of a comparison: send every golden case to two slots, directly, judge and
score the answers, log the comparison to MLflow, and record the verdict as the gate.

Bounded concurrency (requests in flight, blue's and green's of a case sent next to each
other so both sides see the same load) and a per-request timeout; each answer becomes a
:class:`~bgserve.evaluation.comparison.SlotResult` for the pure scorer. Each slot is warmed up
before anything is measured, and the first cases are called again so the latency check
rests on per-case medians. Nothing here goes through the weighted router, so a
comparison never moves or counts live traffic.

A release with a chat prompt is asked on its slot's OpenAI route (cases may carry the
client's ``messages``); when its prompt has a ``response_format``, that side's answers
are checked against the schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from bgserve.app.executor import Executor
from bgserve.app.judge import PairwiseJudge
from bgserve.app.mlflow_log import ComparisonLogger, RunContext, golden_set_hash
from bgserve.app.ports import DeploymentReader, Releases, SlotLocator, Templates
from bgserve.app.scorers import ScorerSet
from bgserve.app.slot_calls import QueryPlan, SlotTarget, output_text, query_slots
from bgserve.backends.base import PlatformCalls
from bgserve.domain import rollout
from bgserve.domain.rollout import Gate
from bgserve.domain.state import LoosenedThreshold
from bgserve.errors import IllegalTransition, InvalidInput, Unavailable
from bgserve.evaluation.comparison import (
    ComparisonReport,
    JudgeSetup,
    LoggedRun,
    SlotResult,
    Thresholds,
    compare,
    default_registry,
)
from bgserve.evaluation.golden import GoldenCase, check_inputs, refuse_client_messages
from bgserve.evaluation.judging import Judgement
from bgserve.evaluation.prompt_spec import PromptSpec
from bgserve.evaluation.response_schema import ResponseSchema, SchemaSides
from bgserve.store import StoredDeployment

__all__ = [
    "CompareOptions",
    "Comparer",
    "ComparerConfig",
    "PromptSpecs",
    "output_text",
]


class PromptSpecs(Protocol):
    """Prompt versions, text or chat (the registry:
    :meth:`bgserve.registry.mlflow_registry.MlflowRegistry.get_prompt_spec`)."""

    def get_prompt_spec(self, name: str, version: int) -> PromptSpec:
        """One prompt version. Raises NotFound, RegistryUnavailable."""
        ...


class _TextOnly:
    """Prompt versions read as text templates, for a comparer given no :class:`PromptSpecs`."""

    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    def get_prompt_spec(self, name: str, version: int) -> PromptSpec:
        return PromptSpec(template=self.templates.get_prompt_template(name, version))


@dataclass(frozen=True)
class ComparerConfig:
    """How the comparer runs and judges, per process: built from the settings group
    :class:`bgserve.compare_settings.ComparisonSettings` (the environment's view of it)."""

    concurrency: int
    timeout_seconds: float
    thresholds: Mapping[str, float]
    scorer: str
    warmup_calls: int = 2
    latency_repeats: int = 3
    latency_cases: int = 20
    price_per_1k_tokens: float | None = None


@dataclass(frozen=True)
class CompareOptions:
    """What one comparison request asks for beyond the cases."""

    thresholds: Mapping[str, float] | None = None
    golden_set: str = "inline"
    scorers: tuple[str, ...] = ()
    judge: bool | None = None
    """None: the judge runs when one is configured; False: skip it; True: require it."""
    judge_rubric: str | None = None
    details: Mapping[str, object] | None = None
    """More for the comparison's history event (a follow rule's trigger)."""


class Comparer:
    """Compares a deployment's blue and green on golden cases and records the gate.

    Reads the deployment and its releases, asks the registry for templates and the backend
    for slot endpoints, queries the slots directly, has the judge and the MLflow scorers
    look at the answers when configured, logs the comparison to MLflow (a failure there is
    recorded, never fatal) and hands the verdict to the executor.
    """

    def __init__(
        self,
        settings: ComparerConfig,
        deployments: DeploymentReader,
        releases: Releases,
        templates: Templates,
        slots: SlotLocator,
        executor: Executor,
        *,
        logger: ComparisonLogger | None = None,
        judge: PairwiseJudge | None = None,
        scorers: ScorerSet | None = None,
        prompts: PromptSpecs | None = None,
    ) -> None:
        self.settings = settings
        self.deployments = deployments
        self.releases = releases
        self.templates = templates
        self.slots = slots
        self.executor = executor
        self.logger = logger
        self.judge = judge
        self.scorers = scorers or ScorerSet({})
        self.prompts = prompts or _TextOnly(templates)

    def compare(
        self,
        name: str,
        cases: list[GoldenCase],
        principal: str,
        thresholds: Mapping[str, float] | None = None,
        options: CompareOptions | None = None,
    ) -> tuple[StoredDeployment, ComparisonReport]:
        """Send every case to blue and green directly, score, log, and record the gate.

        The verdict is stored for this exact blue/green pair; a stage or revert in the
        meantime makes the comparison moot (Conflict). Raises IllegalTransition (no green),
        InvalidInput (a case lacks a variable, a bad threshold, an unknown scorer, a judge
        asked for but not configured), Unavailable (a slot or MLflow is down), NotFound.
        """
        options = options or CompareOptions(thresholds=thresholds)
        before = self.deployments.get_deployment(name).state
        if before.green is None:
            raise IllegalTransition(
                f"{name} has no green release to compare: stage one first", hint="stage"
            )
        configured = Thresholds().with_overrides(dict(self.settings.thresholds))
        overrides = dict(options.thresholds or thresholds or {})
        limits = configured.with_overrides(overrides)
        self._check_request(cases, options)
        (blue_target, blue_schema), (green_target, green_schema) = (
            self.target(name, release, cases) for release in (before.blue, before.green)
        )
        schemas = SchemaSides(blue_schema, green_schema)
        blue, green = query_slots([blue_target, green_target], cases, self._plan())
        if options.scorers or any(case.scorers for case in cases):
            blue, green = self.scorers.score_all(
                cases, [blue, green], options.scorers, self.settings.concurrency
            )
        judgements = self._judge(cases, blue, green, options)
        report = compare(
            cases,
            blue,
            green,
            limits,
            default_registry().get(self.settings.scorer),
            judgements=judgements,
            judge=self._judge_setup() if judgements is not None else None,
            price_per_1k_tokens=self.settings.price_per_1k_tokens,
            schemas=schemas,
        )
        report.mlflow = self._log(name, before.blue, before.green, cases, options, report)
        loosened = tuple(
            LoosenedThreshold(name, used, server)
            for name, (used, server) in limits.loosened_from(configured).items()
        )
        verdict = report.verdict
        gate = Gate(before.blue, before.green, verdict.passed, tuple(verdict.reasons), loosened)
        body = report.model_dump(mode="json")
        details = _log_details(report) | _threshold_details(overrides, gate)
        details |= dict(options.details or {})
        stored = self.executor.run(
            name,
            principal,
            lambda s: replace(rollout.record_gate(s, gate, body), details=details),
        )
        return stored, report

    def _plan(self) -> QueryPlan:
        s = self.settings
        return QueryPlan(
            concurrency=s.concurrency,
            timeout=s.timeout_seconds,
            warmup=s.warmup_calls,
            repeats=s.latency_repeats,
            probe_cases=s.latency_cases,
        )

    def _check_request(self, cases: Sequence[GoldenCase], options: CompareOptions) -> None:
        self.scorers.check(options.scorers, "scorers")
        for index, case in enumerate(cases):
            self.scorers.check(case.scorers, f"cases[{index}].scorers")
        if options.judge and self.judge is None:
            raise InvalidInput(
                "judge was asked for but no judge is configured: set BGSERVE_COMPARE_JUDGE_URL "
                "and BGSERVE_COMPARE_JUDGE_MODEL",
                field="judge",
            )

    def _judge(
        self,
        cases: Sequence[GoldenCase],
        blue: Mapping[str, SlotResult],
        green: Mapping[str, SlotResult],
        options: CompareOptions,
    ) -> dict[str, Judgement] | None:
        if self.judge is None or options.judge is False:
            return None
        judge = self.judge
        return asyncio.run(
            judge.judge_all(cases, blue, green, self.settings.concurrency, options.judge_rubric)
        )

    def _judge_setup(self) -> JudgeSetup | None:
        if self.judge is None:
            return None
        return JudgeSetup(self.judge.settings.model, self.judge.settings.both_orders)

    def _log(
        self,
        name: str,
        blue: int,
        green: int,
        cases: Sequence[GoldenCase],
        options: CompareOptions,
        report: ComparisonReport,
    ) -> LoggedRun | None:
        if self.logger is None:
            return None
        context = RunContext(
            deployment=name,
            kind="golden",
            golden_set=options.golden_set,
            golden_set_hash=golden_set_hash(cases),
            sides={"blue": self._side(blue), "green": self._side(green)},
        )
        title = f"{name}: blue vs green on {options.golden_set}"
        return self.logger.log(context, report, title)

    def _side(self, release_id: int) -> dict[str, str]:
        release = self.releases.get_release(release_id)
        return {
            "release": str(release.id),
            "release_name": release.name,
            "model_uri": release.model_uri,
            "prompt_uri": release.prompt_uri,
        }

    def target(
        self, name: str, release_id: int, cases: Sequence[GoldenCase]
    ) -> tuple[SlotTarget, ResponseSchema | None]:
        """How to call the slot of ``release_id`` on ``name`` with ``cases`` (its chat
        route for a chat prompt), and the prompt's response schema. Raises InvalidInput
        (a case lacks a variable, or has messages for a text template), Unavailable (the
        slot is not ready), NotFound."""
        release = self.releases.get_release(release_id)
        spec = self.prompts.get_prompt_spec(release.prompt_name, release.prompt_version)
        check_inputs(cases, spec.variables)
        if not spec.is_chat:
            refuse_client_messages(
                cases,
                f"{release.prompt_uri} is a text template, and messages need a chat prompt: "
                "remove them or compare chat releases",
            )
        schema = spec.response_schema(release.prompt_uri)
        info = self.slots.slot_info(name, release_id)
        if info is None or not info.ready:
            raise Unavailable(f"the slot of release {release_id} on {name} is not ready")
        if isinstance(self.slots, PlatformCalls):
            call = self.slots.slot_call(name, release_id)
            chat_url = call.url if spec.is_chat else None
            target = SlotTarget(call.url, spec.variables, chat_url, name, call.headers)
            return target, schema
        infer = f"{info.endpoint}/v2/models/{name}/infer"
        chat = f"{info.endpoint}/openai/v1/chat/completions" if spec.is_chat else None
        return SlotTarget(infer, spec.variables, chat_url=chat, model=name), schema


def _threshold_details(overrides: Mapping[str, float], gate: Gate) -> dict[str, object]:
    """The history event's note of the per-call thresholds, and which of them were looser
    than the server's (a pass on those opens the gate only to a forced step)."""
    if not overrides:
        return {}
    return {
        "threshold_overrides": dict(overrides),
        "loosened_thresholds": rollout.loosened_details(gate),
    }


def _log_details(report: ComparisonReport) -> dict[str, object]:
    """The history event's note of where the comparison was logged, or why it was not."""
    run = report.mlflow
    if run is None:
        return {"outcome": report.outcome}
    if run.error is not None:
        return {"outcome": report.outcome, "mlflow_error": run.error}
    return {"outcome": report.outcome, "mlflow_run_id": run.run_id, "mlflow_url": run.url}
