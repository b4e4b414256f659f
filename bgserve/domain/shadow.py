"""Shadow traffic: blue's and green's answers to the same live request, scored and
aggregated with bounded memory. Pure.

Each pair is scored with the scorer and the assertion checks of the golden comparison
(:mod:`bgserve.evaluation.comparison`); only assertions that need no expected answer apply
(``is_json``, ``regex``, ``contains``, ``icontains``, ``max_latency_ms``). The aggregate
keeps counts, a similarity histogram (for the mean and p10), a window of recent latencies,
the ``keep`` most different pairs and the ``keep`` most recent ones, nothing else: memory
does not grow with traffic (:mod:`bgserve.domain.shadow_aggregate`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Annotated, Any

from pydantic import BaseModel, Field

from bgserve.domain.state import DeploymentState, ReleasePair
from bgserve.errors import GateClosed
from bgserve.evaluation.assertions import Answer, Assertion, check_assertion, clamp_score
from bgserve.evaluation.scorers import Scorer
from bgserve.evaluation.verdict import Thresholds, Verdict

__all__ = [
    "SHADOW_ASSERTION_TYPES",
    "PairInput",
    "ScoredPair",
    "ShadowReport",
    "score_pair",
    "shadow_assertions",
    "word_diff_text",
]

SHADOW_ASSERTION_TYPES = ("contains", "icontains", "is_json", "max_latency_ms", "regex")
"""Assertion types that make sense on live traffic, where no answer is expected."""

_MAX_DIFF_TOKENS = 4000
_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def shadow_assertions(assertions: Sequence[Assertion]) -> tuple[Assertion, ...]:
    """``assertions`` if every one can run without an expected answer; else ValueError
    naming the first that cannot."""
    for assertion in assertions:
        if assertion.type not in SHADOW_ASSERTION_TYPES:
            raise ValueError(
                f"assertion type {assertion.type!r} needs an expected answer, which live "
                f"traffic has not: use one of {', '.join(SHADOW_ASSERTION_TYPES)}"
            )
    return tuple(assertions)


@dataclass(frozen=True)
class PairInput:
    """One mirrored request as the collector parsed it; ``green`` is None on a green error,
    ``inputs`` None when they could not be read."""

    request_id: str
    inputs: dict[str, str] | None
    blue: str
    green: str | None
    green_error: str | None
    blue_ms: float
    green_ms: float | None


class ScoredPair(BaseModel):
    """One pair, scored; texts are None when inputs are not kept."""

    request_id: str
    inputs: dict[str, str] | None
    blue: str | None
    green: str | None
    green_error: str | None
    similarity: float | None
    equal: bool
    blue_ms: float
    green_ms: float | None
    regressions: list[str]
    diff: str | None


def word_diff_text(old: str, new: str) -> str:
    """A one-line word diff: ``[-gone-]`` for blue's words, ``{+added+}`` for green's."""
    a, b = _TOKEN.findall(old), _TOKEN.findall(new)
    if len(a) + len(b) > _MAX_DIFF_TOKENS:
        return f"[-{old}-]{{+{new}+}}"
    parts: list[str] = []
    for op, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        gone, added = "".join(a[i1:i2]), "".join(b[j1:j2])
        if op == "equal":
            parts.append(gone)
            continue
        parts.append(f"[-{gone}-]" if gone else "")
        parts.append(f"{{+{added}+}}" if added else "")
    return "".join(parts)


def _checks(
    assertions: Sequence[Assertion], output: str | None, latency: float | None, scorer: Scorer
) -> list[tuple[bool, str]]:
    if output is None:
        return [(False, "no answer") for _ in assertions]
    answer = Answer(output, latency or 0.0, None, scorer)
    return [(r.passed, r.message) for r in (check_assertion(a, answer) for a in assertions)]


def score_pair(
    pair: PairInput,
    scorer: Scorer,
    assertions: Sequence[Assertion] = (),
    *,
    keep_texts: bool = True,
) -> tuple[ScoredPair, list[bool], list[bool]]:
    """The scored pair, and blue's and green's assertion outcomes (in order)."""
    blue = _checks(assertions, pair.blue, pair.blue_ms, scorer)
    green = _checks(assertions, pair.green, pair.green_ms, scorer)
    similarity: float | None = None
    equal = pair.green is not None and pair.green == pair.blue
    if pair.green is not None:
        similarity = 1.0 if equal else clamp_score(scorer.score(pair.blue, pair.green))
    regressions = [
        f"{a.type}: {g[1]}"
        for a, b, g in zip(assertions, blue, green, strict=True)
        if b[0] and not g[0] and pair.green is not None
    ]
    diff = None
    if keep_texts and pair.green is not None and not equal:
        diff = word_diff_text(pair.blue, pair.green)
    scored = ScoredPair(
        request_id=pair.request_id,
        inputs=pair.inputs if keep_texts else None,
        blue=pair.blue if keep_texts else None,
        green=pair.green if keep_texts else None,
        green_error=pair.green_error,
        similarity=similarity,
        equal=equal,
        blue_ms=pair.blue_ms,
        green_ms=pair.green_ms,
        regressions=regressions,
        diff=diff,
    )
    return scored, [b[0] for b in blue], [g[0] for g in green]


# --- the report ------------------------------------------------------------------------


class SimilarityOut(BaseModel):
    mean: float | None
    p10: float | None
    below_threshold: int
    share_below_threshold: float | None


class SideOut(BaseModel):
    assertions_passed: int
    assertions_total: int
    latency_p50_ms: float | None


ShadowPercent = Annotated[
    int, Field(ge=0, le=100, description="Share of blue's requests mirrored to green (0 stops)")
]
"""The mirrored share: the one rule for it, checked where the value enters (the API)."""


class ShadowReport(BaseModel):
    """The live comparison: the same verdict shape as a golden comparison report."""

    blue: int
    green: int
    pairs: int
    compared: int
    dropped: int
    dropped_over_bytes: int = Field(
        0, description="Copies of ``dropped`` the data plane's shadow byte bound refused"
    )
    green_errors: int
    differing: int
    exact_matches: int
    min_pairs: int
    conclusive: bool
    similarity: SimilarityOut
    latency_ratio_p50: float | None
    blue_side: SideOut
    green_side: SideOut
    regressed: int
    worst: list[ScoredPair]
    recent: list[ScoredPair]
    thresholds: Thresholds
    verdict: Verdict

    @property
    def pair(self) -> ReleasePair:
        """The blue/green pair this report compares."""
        return ReleasePair(self.blue, self.green)


def check_shadow_gate(state: DeploymentState, report: ShadowReport | None) -> None:
    """Raise GateClosed (hint: force) when ``report`` is a conclusive, failing shadow
    comparison of ``state``'s current pair, before green's first step or plan. No report,
    a report on another pair, too few pairs, or a plan already under way: nothing to say.
    """
    if report is None or state.plan is not None or report.pair != state.pair:
        return
    if not report.conclusive or report.verdict.passed:
        return
    raise GateClosed(
        f"the shadow comparison of {state.name} on {report.pairs} mirrored requests failed: "
        + "; ".join(report.verdict.reasons)
        + " (fix green, or force the step)",
        details=_gate_details(report),
        hint="force",
    )


def _gate_details(report: ShadowReport) -> dict[str, Any]:
    numbers = {
        "pairs": report.pairs,
        "dropped": report.dropped,
        "green_errors": report.green_errors,
        "differing": report.differing,
        "similarity_mean": report.similarity.mean,
        "similarity_p10": report.similarity.p10,
        "latency_ratio_p50": report.latency_ratio_p50,
    }
    return {"reasons": list(report.verdict.reasons), "shadow": numbers}
