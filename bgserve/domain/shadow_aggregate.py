"""The running aggregate of one blue/green pair's shadow traffic, in bounded memory, and
the report and verdict it gives (each pair is scored by :mod:`bgserve.domain.shadow`)."""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from bgserve.domain.shadow import ScoredPair, ShadowReport, SideOut, SimilarityOut
from bgserve.domain.state import ReleasePair
from bgserve.evaluation.verdict import Thresholds, Verdict, format_pair, percentile

_BINS = 1000  # similarity histogram resolution: 0.001
_LATENCY_WINDOW = 4096
_COUNTS = (
    "pairs",
    "compared",
    "dropped",
    "over_bytes",
    "green_errors",
    "differing",
    "exact",
    "below",
    "regressed",
    "blue_passed",
    "green_passed",
    "checks",
)


@dataclass
class ShadowAggregate:
    """Running totals of one blue/green pair's shadow traffic, in bounded memory."""

    blue: int
    green: int
    thresholds: Thresholds = field(default_factory=Thresholds)
    min_pairs: int = 50
    keep: int = 10
    pairs: int = 0
    compared: int = 0
    dropped: int = 0
    over_bytes: int = 0
    green_errors: int = 0
    differing: int = 0
    exact: int = 0
    below: int = 0
    regressed: int = 0
    similarity_sum: float = 0.0
    blue_passed: int = 0
    green_passed: int = 0
    checks: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * (_BINS + 1))
    latencies: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=_LATENCY_WINDOW)
    )
    recent: deque[ScoredPair] = field(default_factory=deque)
    _worst: list[tuple[float, int, ScoredPair]] = field(default_factory=list)
    _order: count[int] = field(default_factory=count)

    def add_counts(self, dropped: int, green_errors: int, over_bytes: int = 0) -> None:
        """Count copies the data plane dropped (``over_bytes`` of them for its byte bound)
        and green's errors and timeouts."""
        self.dropped += dropped
        self.over_bytes += over_bytes
        self.green_errors += green_errors

    def add(self, scored: ScoredPair, blue_checks: list[bool], green_checks: list[bool]) -> None:
        """Fold one scored pair into the totals."""
        self.pairs += 1
        self.blue_passed += sum(blue_checks)
        self.green_passed += sum(green_checks)
        self.checks += len(green_checks)
        self.regressed += bool(scored.regressions)
        self.recent.append(scored)
        while len(self.recent) > self.keep:
            self.recent.popleft()
        if scored.similarity is None:
            return
        self._add_compared(scored, scored.similarity)

    def _add_compared(self, scored: ScoredPair, similarity: float) -> None:
        self.compared += 1
        self.similarity_sum += similarity
        self.histogram[round(similarity * _BINS)] += 1
        self.exact += scored.equal
        self.differing += not scored.equal
        self.below += similarity < self.thresholds.agreement_similarity
        if scored.green_ms is not None:
            self.latencies.append((scored.blue_ms, scored.green_ms))
        if not scored.equal:
            entry = (-similarity, next(self._order), scored)
            if len(self._worst) < self.keep:
                heapq.heappush(self._worst, entry)
            elif entry[:2] > self._worst[0][:2]:
                heapq.heapreplace(self._worst, entry)

    def worst(self) -> list[ScoredPair]:
        """The kept most different pairs, most different first."""
        return [entry[2] for entry in sorted(self._worst, key=lambda e: (-e[0], e[1]))]

    def p10(self) -> float | None:
        """The similarity below which a tenth of the compared pairs fall (0.001 steps)."""
        if not self.compared:
            return None
        rank = max(1, -(-self.compared // 10))
        seen = 0
        for index, hits in enumerate(self.histogram):
            seen += hits
            if seen >= rank:
                return index / _BINS
        return 1.0

    def latency_ratio_p50(self) -> float | None:
        """Green p50 over blue's on the latency window, each raised to the floor first."""
        blue = percentile([b for b, _ in self.latencies], 0.5)
        green = percentile([g for _, g in self.latencies], 0.5)
        if blue is None or green is None:
            return None
        floor = self.thresholds.min_latency_ms_for_ratio
        low = max(blue, floor)
        return max(green, floor) / low if low > 0 else None

    @property
    def pair(self) -> ReleasePair:
        """The blue/green pair this aggregate compares."""
        return ReleasePair(self.blue, self.green)

    def to_state(self) -> dict[str, Any]:
        """Everything the report is made of, as JSON-ready data (see :meth:`from_state`)."""
        return {
            "blue": self.blue,
            "green": self.green,
            "thresholds": self.thresholds.model_dump(mode="json"),
            "min_pairs": self.min_pairs,
            "keep": self.keep,
            "counts": {name: getattr(self, name) for name in _COUNTS},
            "similarity_sum": self.similarity_sum,
            "histogram": {str(i): n for i, n in enumerate(self.histogram) if n},
            "latencies": [list(pair) for pair in self.latencies],
            "recent": [pair.model_dump(mode="json") for pair in self.recent],
            "worst": [
                [key, order, pair.model_dump(mode="json")] for key, order, pair in self._worst
            ],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ShadowAggregate:
        """The aggregate :meth:`to_state` described. Raises ValueError (a pydantic
        ValidationError among them), KeyError or TypeError on malformed data."""
        aggregate = cls(
            int(state["blue"]),
            int(state["green"]),
            thresholds=Thresholds.model_validate(state["thresholds"]),
            min_pairs=int(state["min_pairs"]),
            keep=int(state["keep"]),
            similarity_sum=float(state["similarity_sum"]),
        )
        for name in _COUNTS:
            setattr(aggregate, name, int(state["counts"][name]))
        for index, hits in state["histogram"].items():
            aggregate.histogram[int(index)] = int(hits)
        aggregate.latencies.extend((float(b), float(g)) for b, g in state["latencies"])
        aggregate.recent.extend(ScoredPair.model_validate(p) for p in state["recent"])
        worst = [(float(k), int(o), ScoredPair.model_validate(p)) for k, o, p in state["worst"]]
        heapq.heapify(worst)
        aggregate._worst = worst
        aggregate._order = count(max((o for _, o, _ in worst), default=-1) + 1)
        return aggregate

    def report(self) -> ShadowReport:
        """The report as it stands, with its verdict."""
        mean = self.similarity_sum / self.compared if self.compared else None
        share = self.below / self.compared if self.compared else None
        reasons = self._reasons(mean, share)
        return ShadowReport(
            blue=self.blue,
            green=self.green,
            pairs=self.pairs,
            compared=self.compared,
            dropped=self.dropped,
            dropped_over_bytes=self.over_bytes,
            green_errors=self.green_errors,
            differing=self.differing,
            exact_matches=self.exact,
            min_pairs=self.min_pairs,
            conclusive=self.pairs >= self.min_pairs,
            similarity=SimilarityOut(
                mean=mean, p10=self.p10(), below_threshold=self.below, share_below_threshold=share
            ),
            latency_ratio_p50=self.latency_ratio_p50(),
            blue_side=SideOut(
                assertions_passed=self.blue_passed,
                assertions_total=self.checks,
                latency_p50_ms=percentile([b for b, _ in self.latencies], 0.5),
            ),
            green_side=SideOut(
                assertions_passed=self.green_passed,
                assertions_total=self.checks,
                latency_p50_ms=percentile([g for _, g in self.latencies], 0.5),
            ),
            regressed=self.regressed,
            worst=self.worst(),
            recent=list(reversed(self.recent)),
            thresholds=self.thresholds,
            verdict=Verdict(passed=not reasons, reasons=reasons),
        )

    def _reasons(self, mean: float | None, share: float | None) -> list[str]:
        t = self.thresholds
        found: list[str] = []
        if self.pairs and mean is None:
            found.append("green answered none of the mirrored requests")
        if mean is not None and mean < t.min_mean_similarity:
            found.append(
                "mean similarity {} on mirrored traffic is below {}".format(
                    *format_pair(mean, t.min_mean_similarity)
                )
            )
        if share is not None and share > 1 - t.min_agreement_rate + 1e-9:
            shown, limit = format_pair(share, 1 - t.min_agreement_rate)
            found.append(
                f"{self.below} of {self.compared} mirrored pairs differ (similarity below "
                f"{t.agreement_similarity:.2f}): share {shown} is above {limit}"
            )
        found.extend(self._error_and_latency_reasons())
        return found

    def _error_and_latency_reasons(self) -> list[str]:
        t = self.thresholds
        found: list[str] = []
        tried = self.compared + self.green_errors
        rate = self.green_errors / tried if tried else 0.0
        if rate > t.max_green_error_rate + 1e-9:
            shown, limit = format_pair(rate, t.max_green_error_rate)
            found.append(
                f"green failed {self.green_errors} mirrored requests (error rate {shown} is "
                f"above {limit})"
            )
        if self.checks and self.blue_passed - self.green_passed > (
            t.max_assertion_regression * self.checks + 1e-9
        ):
            found.append(
                f"green passes {self.green_passed} of {self.checks} assertions against blue's "
                f"{self.blue_passed}, more than {t.max_assertion_regression:.2f} worse"
            )
        ratio = self.latency_ratio_p50()
        if ratio is not None and ratio > t.max_latency_ratio_p50:
            found.append(
                f"green p50 latency on mirrored traffic is {ratio:.2f} times blue's, above "
                f"the limit of {t.max_latency_ratio_p50:.2f}"
            )
        return found
