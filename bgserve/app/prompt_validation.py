"""Validate a candidate prompt on the live model before it takes any traffic.

The golden set is rendered with the live prompt (blue's) and with the candidate (a
``prompts:/`` URI or a raw template); both sets of prompts go through blue's *base
model*, loaded here from the registry, and the answers are compared as blue against
green. Nothing is deployed and no traffic moves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
from pydantic import BaseModel

from bgserve.app.comparer import ComparerConfig
from bgserve.app.mlflow_log import ComparisonLogger, RunContext, golden_set_hash
from bgserve.app.ports import DeploymentReader, Releases
from bgserve.domain.release import Release, parse_uri
from bgserve.errors import BgserveError, InvalidInput, RegistryUnavailable
from bgserve.evaluation.comparison import ComparisonReport, SlotResult, Thresholds, compare
from bgserve.evaluation.golden import GoldenCase, LintReport, lint_template, refuse_client_messages
from bgserve.evaluation.scorers import default_registry
from bgserve.evaluation.template import render, variables
from bgserve.registry.bundle_model import as_strings, input_column
from bgserve.registry.mlflow_registry import MlflowRegistry, translate_errors


class PromptValidation(BaseModel):
    """The live prompt against the candidate on the live model: lint plus comparison."""

    deployment: str
    model_uri: str
    live_prompt_uri: str
    candidate: str
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
        self._model: tuple[str, Any, str] | None = None  # (uri, model, input column)

    def validate(
        self,
        deployment: str,
        cases: list[GoldenCase],
        *,
        prompt_uri: str | None = None,
        template: str | None = None,
        thresholds: dict[str, float] | None = None,
        golden_set: str = "inline",
    ) -> PromptValidation:
        """Lint the candidate against ``cases`` and compare it with the live prompt; the
        comparison is logged to MLflow as the golden comparisons are (a logging failure is
        in the report, never raised).

        Raises InvalidInput (no or two candidates, bad URI, a template without variables,
        a case with chat messages),
        NotFound (deployment, prompt), RegistryUnavailable.
        """
        refuse_client_messages(
            cases, "a prompt validation renders text templates; compare chat prompts as releases"
        )
        live = self.releases.get_release(self.deployments.get_deployment(deployment).state.blue)
        candidate, label = self._candidate(prompt_uri, template)
        live_template = self.registry.get_prompt_template(live.prompt_name, live.prompt_version)
        lint = lint_template(variables(candidate), cases)
        blue = self._run(live.model_uri, live_template, cases)
        green = self._run(live.model_uri, candidate, cases)
        limits = Thresholds().with_overrides(dict(self.settings.thresholds))
        scorer = default_registry().get(self.settings.scorer)
        report = compare(cases, blue, green, limits.with_overrides(thresholds), scorer)
        if self.logger is not None:
            context = RunContext(
                deployment=deployment,
                kind="prompt-validation",
                golden_set=golden_set,
                golden_set_hash=golden_set_hash(cases),
                sides={"blue": _side(live, live.prompt_uri), "green": _side(live, label)},
            )
            title = f"{deployment}: live prompt vs {label} on {golden_set}"
            report.mlflow = self.logger.log(context, report, title)
        return PromptValidation(
            deployment=deployment,
            model_uri=live.model_uri,
            live_prompt_uri=live.prompt_uri,
            candidate=label,
            lint=lint,
            report=report,
        )

    def _candidate(self, prompt_uri: str | None, template: str | None) -> tuple[str, str]:
        if (prompt_uri is None) == (template is None):
            raise InvalidInput("give exactly one of prompt_uri or template", field="prompt_uri")
        if template is not None:
            if not variables(template):
                raise InvalidInput(
                    "template has no {{variable}}: it cannot use the golden set's inputs",
                    field="template",
                )
            return template, "inline template"
        ref = parse_uri(prompt_uri or "", "prompts", "prompt_uri")
        version = ref.version or self.registry.resolve_prompt(ref)
        text = self.registry.get_prompt_template(ref.name, version)
        return text, ref.pinned(version).uri

    def _run(
        self, model_uri: str, template: str, cases: Sequence[GoldenCase]
    ) -> dict[str, SlotResult]:
        model, column = self._load(model_uri)
        return {case.id: self._answer(model, column, template, case) for case in cases}

    @staticmethod
    def _answer(model: Any, column: str, template: str, case: GoldenCase) -> SlotResult:
        try:
            prompt = render(template, case.inputs)
        except InvalidInput as exc:
            return SlotResult(output=None, latency_ms=0.0, error=f"rendering failed: {exc.message}")
        started = time.perf_counter()
        try:
            output = as_strings(model.predict(pd.DataFrame({column: [prompt]})))[0]
        except Exception as exc:  # the model's own failure is a result, not a crash
            return SlotResult(output=None, latency_ms=_ms(started), error=f"model failed: {exc}")
        return SlotResult(output=output, latency_ms=_ms(started), error=None)

    def _load(self, model_uri: str) -> tuple[Any, str]:
        with self._lock:
            if self._model is None or self._model[0] != model_uri:
                self._model = (model_uri, *self._fetch(model_uri))
            return self._model[1], self._model[2]

    def _fetch(self, model_uri: str) -> tuple[Any, str]:
        import mlflow.pyfunc

        try:
            with translate_errors(f"loading {model_uri}"), self.registry.uris():
                model = mlflow.pyfunc.load_model(model_uri)
        except BgserveError:
            raise
        except Exception as exc:
            raise RegistryUnavailable(f"cannot load {model_uri}: {exc}") from exc
        return model, input_column(model)


def _side(live: Release, prompt_uri: str) -> dict[str, str]:
    """One side of a prompt validation: the live model with ``prompt_uri``."""
    return {
        "release": str(live.id),
        "release_name": live.name,
        "model_uri": live.model_uri,
        "prompt_uri": prompt_uri,
    }


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
