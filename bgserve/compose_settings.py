"""The application parts' own settings, read off :class:`Settings` (part of the
composition root): the default analysis of a plan, the comparison's settings and its
MLflow logger, judge and scorers, and shadow traffic's settings.
"""

from __future__ import annotations

from typing import Any

from bgserve.app.comparer import CompareSettings
from bgserve.app.shadow import ShadowSettings
from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.comparison import Thresholds, default_registry
from bgserve.registry.mlflow_registry import MlflowRegistry
from bgserve.settings import Settings


def analysis_settings_of(settings: Settings) -> AnalysisSettings:
    """The default analysis of a promotion plan."""
    return AnalysisSettings(
        min_requests=settings.plan_min_requests,
        max_error_rate_delta=settings.plan_max_error_rate_delta,
        significance=settings.plan_significance,
        max_latency_p95_ratio=settings.plan_max_latency_p95_ratio,
        max_bake_s=settings.plan_max_bake_s,
        on_inconclusive=settings.plan_on_inconclusive,
    )


def compare_settings_of(settings: Settings) -> CompareSettings:
    """The comparison part of ``settings``."""
    return CompareSettings(
        concurrency=settings.compare_concurrency,
        timeout_seconds=settings.compare_timeout_seconds,
        thresholds=dict(settings.compare_thresholds),
        scorer=settings.compare_scorer,
        warmup_calls=settings.compare_warmup_calls,
        latency_repeats=settings.compare_latency_repeats,
        latency_cases=settings.compare_latency_cases,
        price_per_1k_tokens=settings.compare_price_per_1k_tokens,
    )


def comparer_parts_of(settings: Settings, registry: MlflowRegistry) -> dict[str, Any]:
    """The comparer's MLflow logger, pairwise judge, MLflow scorers and prompt reader."""
    from bgserve.app.judge import JudgeSettings, PairwiseJudge
    from bgserve.app.mlflow_log import ComparisonLogger
    from bgserve.app.scorers import ScorerSet, load_scorer_modules
    from bgserve.domain.judging import DEFAULT_RUBRIC
    from bgserve.registry.chat_prompts import PromptSpecReader

    tracking_uri = settings.compare_mlflow_tracking_uri or registry.tracking_uri
    logger = ComparisonLogger(
        tracking_uri,
        ui_url=settings.compare_mlflow_ui_url,
        timeout_seconds=settings.compare_mlflow_timeout_seconds,
        artifact_location=None
        if settings.compare_mlflow_tracking_uri
        else registry.artifact_location,
    )
    judge = None
    if settings.compare_judge_url:
        judge = PairwiseJudge(
            JudgeSettings(
                url=settings.compare_judge_url,
                model=settings.compare_judge_model,
                api_key_env=settings.compare_judge_api_key_env,
                rubric=settings.compare_judge_rubric or DEFAULT_RUBRIC,
                both_orders=settings.compare_judge_both_orders,
                timeout_seconds=settings.compare_timeout_seconds,
                variables=settings.compare_judge_variables,
            )
        )
    return {
        "logger": logger if settings.compare_log_to_mlflow else None,
        "judge": judge,
        "scorers": ScorerSet(load_scorer_modules(settings.compare_scorer_modules)),
        "prompts": PromptSpecReader(registry),
    }


def shadow_settings_of(settings: Settings) -> ShadowSettings:
    """The shadow-traffic part of ``settings``; thresholds as the golden comparison's."""
    return ShadowSettings(
        thresholds=Thresholds().with_overrides(dict(settings.compare_thresholds)),
        scorer=default_registry().get(settings.compare_scorer),
        min_pairs=settings.shadow_min_pairs,
        keep=settings.shadow_keep_pairs,
        store_inputs=settings.shadow_store_inputs,
        max_queue=settings.shadow_queue,
        interval=settings.shadow_interval_seconds,
    )
