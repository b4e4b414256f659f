"""Log a comparison to MLflow: a run in the experiment ``bgserve/<deployment>``.

Params say what was compared (releases, URIs, golden set and its hash, thresholds);
metrics carry the rates, similarity, latency, tokens, the judge's win rate and the
scorers' means; the per-case table goes through ``log_table`` (MLflow's evaluation views
read it), the HTML report is an artifact and the verdict a tag. Logging runs in a thread
of its own with a deadline: a slow or unreachable tracking server costs at most that long,
and any failure comes back as :class:`LoggedRun` ``error``, never as an exception.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bgserve.evaluation.comparison import ComparisonReport, LoggedRun
from bgserve.evaluation.golden import GoldenCase
from bgserve.evaluation.verdict import percentile
from bgserve.registry.session import beside_sqlite, ensure_experiment

__all__ = ["ComparisonLogger", "RunContext", "golden_set_hash"]


@dataclass(frozen=True)
class RunContext:
    """What a comparison compared, for the run's params."""

    deployment: str
    kind: str
    golden_set: str
    golden_set_hash: str
    sides: Mapping[str, Mapping[str, str]]
    """Per role (blue, green): release id, name, model URI and prompt URI."""


def golden_set_hash(cases: Sequence[GoldenCase]) -> str:
    """SHA-256 of the cases as canonical JSON: the same set gives the same hash."""
    dumped = [case.model_dump(mode="json", by_alias=True) for case in cases]
    text = json.dumps(dumped, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class ComparisonLogger:
    """Logs comparison reports as MLflow runs on one tracking store.

    ``ui_url`` is the MLflow UI the run links point to; an ``http(s)`` tracking URI is
    its own UI when it is not given.
    """

    def __init__(
        self,
        tracking_uri: str | None,
        *,
        ui_url: str | None = None,
        timeout_seconds: float = 30.0,
        artifact_location: str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.timeout_seconds = timeout_seconds
        self.artifact_location = artifact_location or beside_sqlite(tracking_uri)
        base = ui_url or (tracking_uri if (tracking_uri or "").startswith("http") else None)
        self.ui_url = base.rstrip("/") if base else None
        self.failures = 0
        """Comparisons whose logging failed since start (for /metrics)."""

    def log(self, context: RunContext, report: ComparisonReport, title: str) -> LoggedRun:
        """Log ``report`` as a run; a failure or the deadline is returned as ``error``."""
        outcome: list[LoggedRun] = []
        worker = threading.Thread(
            target=lambda: outcome.append(self._log_safely(context, report, title)),
            name=f"mlflow-log-{context.deployment}",
            daemon=True,
        )
        worker.start()
        worker.join(self.timeout_seconds)
        if outcome:
            run = outcome[0]
        else:
            run = LoggedRun(
                experiment=_experiment(context),
                error=f"the MLflow tracking store at {self.tracking_uri} did not answer "
                f"within {self.timeout_seconds:g}s",
            )
        if run.error is not None:
            self.failures += 1
        return run

    def _log_safely(self, context: RunContext, report: ComparisonReport, title: str) -> LoggedRun:
        name = _experiment(context)
        run = LoggedRun(experiment=name)
        try:
            import mlflow

            client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
            experiment_id = ensure_experiment(client, name, self.artifact_location)
            created = client.create_run(experiment_id, run_name=_run_name(context), tags=_tags())
            run_id = created.info.run_id
            run = LoggedRun(
                run_id=run_id,
                experiment_id=experiment_id,
                experiment=name,
                url=self._url(experiment_id, run_id),
            )
            self._fill(client, run_id, context, report.model_copy(update={"mlflow": run}), title)
        except Exception as exc:  # any failure of the store is recorded, never raised
            return run.model_copy(update={"error": f"{type(exc).__name__}: {exc}"[:500]})
        return run

    def _fill(
        self,
        client: Any,
        run_id: str,
        context: RunContext,
        report: ComparisonReport,
        title: str,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        from bgserve.report_html import render_html

        now = int(time.time() * 1000)
        params = [Param(k, str(v)[:6000]) for k, v in run_params(context, report).items()]
        metrics = [Metric(k, v, now, 0) for k, v in run_metrics(report).items()]
        tags = [
            RunTag("verdict", report.outcome),
            RunTag("bgserve.deployment", context.deployment),
            RunTag("bgserve.kind", context.kind),
        ]
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
        client.log_table(run_id, case_table(report), "comparison_cases.json")
        client.log_text(run_id, render_html(report, title), "report.html")
        client.set_terminated(run_id, "FINISHED")

    def _url(self, experiment_id: str, run_id: str) -> str | None:
        if self.ui_url is None:
            return None
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"


def _experiment(context: RunContext) -> str:
    return f"bgserve/{context.deployment}"


def _run_name(context: RunContext) -> str:
    blue, green = context.sides["blue"], context.sides["green"]
    return f"{context.kind} {blue.get('release', '?')} vs {green.get('release', '?')}"


def _tags() -> dict[str, str]:
    return {"mlflow.source.name": "bgserve", "mlflow.source.type": "JOB"}


def run_params(context: RunContext, report: ComparisonReport) -> dict[str, object]:
    """The run's params: what was compared, against what, with which limits."""
    params: dict[str, object] = {
        "golden_set": context.golden_set,
        "golden_set_sha256": context.golden_set_hash,
        "cases": report.summary.cases,
        "scorer": report.scorer,
    }
    for role, side in context.sides.items():
        params.update({f"{role}_{key}": value for key, value in side.items()})
    params.update({f"threshold.{k}": v for k, v in report.thresholds.model_dump().items()})
    if report.summary.judge is not None:
        params["judge_model"] = report.summary.judge.model
        params["judge_both_orders"] = report.summary.judge.both_orders
    return params


def run_metrics(report: ComparisonReport) -> dict[str, float]:
    """The run's metrics; a figure that could not be measured is left out."""
    s = report.summary
    similarities = [c.similarity for c in report.cases if c.similarity is not None]
    found: dict[str, float | None] = {
        "similarity_mean": s.mean_similarity,
        "similarity_p10": percentile(similarities, 0.1),
        "agreement_rate": s.agreement_rate,
        "exact_match_rate": s.exact_match_rate,
        "latency_ratio_p50": s.latency_ratio_p50,
        "latency_ratio_p95": s.latency_ratio_p95,
        "passed": 1.0 if report.verdict.passed else 0.0,
    }
    for role, slot in (("blue", s.blue), ("green", s.green)):
        found[f"{role}_assertion_pass_rate"] = slot.assertion_pass_rate
        found[f"{role}_error_rate"] = slot.error_rate
        found[f"{role}_latency_p50_ms"] = slot.latency_p50_ms
        found[f"{role}_latency_p95_ms"] = slot.latency_p95_ms
    if s.tokens is not None:
        found["blue_output_tokens_mean"] = s.tokens.blue_mean
        found["green_output_tokens_mean"] = s.tokens.green_mean
        found["output_tokens_ratio"] = s.tokens.ratio
    if s.judge is not None:
        found["judge_win_rate"] = s.judge.win_rate
        found["judge_win_rate_low"] = s.judge.interval.low if s.judge.interval else None
        found["judge_win_rate_high"] = s.judge.interval.high if s.judge.interval else None
    for scorer in s.scorers:
        found[f"scorer.{scorer.name}.blue_mean"] = scorer.blue_mean
        found[f"scorer.{scorer.name}.green_mean"] = scorer.green_mean
    return {k: float(v) for k, v in found.items() if v is not None}


def case_table(report: ComparisonReport) -> dict[str, list[Any]]:
    """One row a case with both answers, for ``log_table``."""
    rows: dict[str, list[Any]] = {
        key: []
        for key in (
            "case_id",
            "inputs",
            "expected",
            "blue_output",
            "green_output",
            "similarity",
            "blue_latency_ms",
            "green_latency_ms",
            "blue_assertions_passed",
            "green_assertions_passed",
            "blue_output_tokens",
            "green_output_tokens",
            "judge",
            "problems",
        )
    }
    for case in report.cases:
        values = {
            "case_id": case.id,
            "inputs": json.dumps(case.inputs, ensure_ascii=False),
            "expected": case.expected,
            "blue_output": case.blue.output if case.blue.answered else case.blue.error,
            "green_output": case.green.output if case.green.answered else case.green.error,
            "similarity": case.similarity,
            "blue_latency_ms": case.blue.latency_ms,
            "green_latency_ms": case.green.latency_ms,
            "blue_assertions_passed": sum(a.passed for a in case.blue.assertions),
            "green_assertions_passed": sum(a.passed for a in case.green.assertions),
            "blue_output_tokens": case.blue.output_tokens,
            "green_output_tokens": case.green.output_tokens,
            "judge": None if case.judge is None else case.judge.outcome,
            "problems": "; ".join(case.problems),
        }
        for key, value in values.items():
            rows[key].append(value)
    return rows
