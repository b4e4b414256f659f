"""The application parts' own settings, read off :class:`Settings`: the comparison's
settings and its MLflow logger, judge and scorers, and shadow traffic's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bgserve.app.comparer import ComparerConfig, PromptSpecs
from bgserve.app.shadow import ShadowSettings
from bgserve.evaluation.comparison import Thresholds, default_registry
from bgserve.registry.mlflow_registry import MlflowRegistry
from bgserve.settings import CompareGroup, ShadowGroup

if TYPE_CHECKING:
    from bgserve.app.judge import PairwiseJudge
    from bgserve.app.mlflow_log import ComparisonLogger
    from bgserve.app.scorers import ScorerSet


@dataclass(frozen=True)
class ComparerParts:
    """What a comparer uses beside its settings: where it logs, who judges, which scorers."""

    logger: ComparisonLogger | None
    judge: PairwiseJudge | None
    scorers: ScorerSet
    prompts: PromptSpecs


def compare_settings_of(compare: CompareGroup) -> ComparerConfig:
    """The comparison's settings."""
    return ComparerConfig(
        concurrency=compare.concurrency,
        timeout_seconds=compare.timeout_seconds,
        thresholds=dict(compare.thresholds),
        scorer=compare.scorer,
        warmup_calls=compare.warmup_calls,
        latency_repeats=compare.latency_repeats,
        latency_cases=compare.latency_cases,
        price_per_1k_tokens=compare.price_per_1k_tokens,
    )


def comparer_parts_of(compare: CompareGroup, registry: MlflowRegistry) -> ComparerParts:
    """The comparer's MLflow logger, pairwise judge, MLflow scorers and prompt reader.
    Raises InvalidInput for a scorer module that cannot be loaded."""
    from bgserve.app.judge import JudgeSettings, PairwiseJudge
    from bgserve.app.mlflow_log import ComparisonLogger
    from bgserve.app.scorers import ScorerSet, load_scorer_modules
    from bgserve.evaluation.judging import DEFAULT_RUBRIC

    logger = None
    if compare.log_to_mlflow:
        logger = ComparisonLogger(
            compare.mlflow_tracking_uri or registry.tracking_uri,
            ui_url=compare.mlflow_ui_url,
            timeout_seconds=compare.mlflow_timeout_seconds,
            artifact_location=None if compare.mlflow_tracking_uri else registry.artifact_location,
        )
    judge = None
    if compare.judge.url:
        judge = PairwiseJudge(
            JudgeSettings(
                url=compare.judge.url,
                model=compare.judge.model,
                api_key_env=compare.judge.api_key_env,
                rubric=compare.judge.rubric or DEFAULT_RUBRIC,
                both_orders=compare.judge.both_orders,
                timeout_seconds=compare.timeout_seconds,
                variables=compare.judge.variables,
            )
        )
    scorers = ScorerSet(load_scorer_modules(compare.scorer_modules))
    return ComparerParts(logger=logger, judge=judge, scorers=scorers, prompts=registry)


def shadow_settings_of(shadow: ShadowGroup, compare: CompareGroup) -> ShadowSettings:
    """Shadow traffic's settings; thresholds and scorer as the golden comparison's."""
    return ShadowSettings(
        thresholds=Thresholds().with_overrides(dict(compare.thresholds)),
        scorer=default_registry().get(compare.scorer),
        min_pairs=shadow.min_pairs,
        keep=shadow.keep_pairs,
        store_inputs=shadow.store_inputs,
        max_queue=shadow.queue,
        interval=shadow.interval_seconds,
    )
