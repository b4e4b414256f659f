"""MLflow scorers (``mlflow.genai`` ``Scorer`` objects) on both sides of a comparison.

User-defined scorers come from importable modules named in settings
(``BGSERVE_COMPARE_SCORER_MODULES``): every ``Scorer`` object at a module's top level is
available under its ``name``. A golden case or a request names the ones to run. A scorer
that raises or answers something with no numeric reading gives None for that answer.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bgserve.errors import InvalidInput
from bgserve.evaluation.comparison import SlotResult
from bgserve.evaluation.golden import GoldenCase
from bgserve.evaluation.scorer_values import as_number

__all__ = ["ScorerSet", "load_scorer_modules"]


def load_scorer_modules(modules: Iterable[str]) -> dict[str, Any]:
    """The ``Scorer`` objects of each module, by name.

    Raises:
        InvalidInput: a module does not import, or holds no scorer.
    """
    from mlflow.genai.scorers import Scorer

    found: dict[str, Any] = {}
    for path in modules:
        try:
            module = importlib.import_module(path)
        except Exception as exc:
            raise InvalidInput(
                f"scorer module {path!r} does not import: {type(exc).__name__}: {exc}",
                field="compare_scorer_modules",
            ) from exc
        scorers = [v for v in vars(module).values() if isinstance(v, Scorer)]
        if not scorers:
            raise InvalidInput(
                f"scorer module {path!r} defines no mlflow.genai Scorer (use @scorer)",
                field="compare_scorer_modules",
            )
        found.update({scorer.name: scorer for scorer in scorers})
    return found


class ScorerSet:
    """The scorers loaded from settings; runs the named ones on both sides."""

    def __init__(self, scorers: Mapping[str, Any]) -> None:
        self.scorers = dict(scorers)

    def check(self, names: Iterable[str], field: str) -> None:
        """InvalidInput naming the unknown scorer and the known ones."""
        for name in names:
            if name not in self.scorers:
                known = ", ".join(sorted(self.scorers)) or "none (set compare_scorer_modules)"
                raise InvalidInput(
                    f"unknown MLflow scorer {name!r}: known are {known}", field=field
                )

    def score_all(
        self,
        cases: Sequence[GoldenCase],
        results: Sequence[dict[str, SlotResult]],
        extra: Sequence[str],
        concurrency: int,
    ) -> list[dict[str, SlotResult]]:
        """``results`` (one mapping a side) with each answer's scores filled in."""
        jobs = [
            (side, case, name)
            for side in range(len(results))
            for case in cases
            for name in dict.fromkeys([*case.scorers, *extra])
        ]
        if not jobs:
            return list(results)
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            values = list(pool.map(lambda job: self._score(results[job[0]], *job[1:]), jobs))
        scored = [{cid: r.model_copy(deep=True) for cid, r in side.items()} for side in results]
        for (side, case, name), value in zip(jobs, values, strict=True):
            scored[side][case.id].scores[name] = value
        return scored

    def _score(
        self, results: Mapping[str, SlotResult], case: GoldenCase, name: str
    ) -> float | None:
        output = results[case.id].output
        if output is None:
            return None
        expectations = {"expected_response": case.expected} if case.expected else None
        try:
            # run() passes each scorer only the arguments its function declares.
            value = self.scorers[name].run(
                inputs=dict(case.inputs), outputs=output, expectations=expectations
            )
        except Exception:  # a user's scorer failing is a missing value, not a crash
            return None
        return as_number(getattr(value, "value", value))
