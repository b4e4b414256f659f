"""The I/O half of shadow traffic: turn mirroring on and off, drain the mirrored pairs,
score them, and gate promotion on the result.

The shadow state (percent, report) lives in this process only: a restart forgets it and
mirroring stops with the data plane. Staging a new green or a cutover changes the
deployment's blue/green pair; the collector notices, turns mirroring off and drops the
report, which was about another pair. Pairs are never logged: they are live user traffic.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from bgserve.app.ports import DeploymentReader
from bgserve.app.shadow_bodies import parse_inputs, parse_pair
from bgserve.backends.base import ShadowTraffic
from bgserve.domain.analysis import Check, Outcome
from bgserve.domain.shadow import ShadowReport, score_pair
from bgserve.domain.shadow_aggregate import ShadowAggregate
from bgserve.domain.state import DeploymentState
from bgserve.errors import BgserveError, IllegalTransition, NotFound
from bgserve.evaluation.assertions import Assertion
from bgserve.evaluation.scorers import Scorer
from bgserve.evaluation.verdict import Thresholds

__all__ = [
    "ShadowCollector",
    "ShadowSettings",
    "parse_inputs",
    "parse_pair",
]

log = logging.getLogger("bgserve.shadow")


@dataclass(frozen=True)
class ShadowSettings:
    """How shadow reports are scored, judged and kept: from settings, per process."""

    thresholds: Thresholds
    scorer: Scorer
    min_pairs: int = 50
    keep: int = 10
    store_inputs: bool = True
    max_queue: int = 256
    interval: float = 0.5


@dataclass
class _Shadow:
    percent: int
    max_pairs: int | None
    aggregate: ShadowAggregate
    assertions: tuple[Assertion, ...] = ()
    lock: threading.Lock = field(default_factory=threading.Lock)


class ShadowCollector:
    """Shadow traffic per deployment: start, stop, collect in the background, report, gate."""

    def __init__(
        self, backend: object, deployments: DeploymentReader, settings: ShadowSettings
    ) -> None:
        self.backend = backend
        self.deployments = deployments
        self.settings = settings
        self._shadows: dict[str, _Shadow] = {}
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # operations

    def start_shadow(
        self,
        name: str,
        percent: int,
        max_pairs: int | None = None,
        assertions: Sequence[Assertion] = (),
    ) -> ShadowReport:
        """Mirror ``percent`` of blue's requests to green and score the pairs.

        A new blue/green pair starts a new report; the same pair keeps its report and only
        changes the percent, which is checked where it enters
        (:data:`~bgserve.domain.shadow.ShadowPercent`). Raises IllegalTransition (no green,
        or a backend that cannot mirror), NotFound, BackendError.
        """
        source = self._source(name)
        state = self.deployments.get_deployment(name).state
        if state.green is None:
            raise IllegalTransition(f"{name} has no green release to mirror to", hint="stage")
        source.set_shadow(name, percent, self.settings.max_queue)
        with self._guard:
            shadow = self._shadows.get(name)
            if shadow is None or not _same_pair(shadow.aggregate, state):
                shadow = _Shadow(percent, max_pairs, self._aggregate(state))
                self._shadows[name] = shadow
            shadow.percent, shadow.max_pairs = percent, max_pairs
            shadow.assertions = tuple(assertions)
        return self.report(name)

    def stop_shadow(self, name: str) -> ShadowReport | None:
        """Stop mirroring; the report stays readable. Idempotent."""
        self.deployments.get_deployment(name)
        shadow = self._shadows.get(name)
        if shadow is None:
            return None
        self._collect(name, shadow)  # the pairs already mirrored still count
        self._turn_off(name, shadow)
        return shadow.aggregate.report()

    def report(self, name: str) -> ShadowReport:
        """The shadow report of ``name``'s current pair. Raises NotFound."""
        shadow = self._shadows.get(name)
        if shadow is None or not self._check_pair(name, shadow):
            raise NotFound(
                f"{name} has no shadow report for its current blue and green: "
                "start mirroring to green first"
            )
        with shadow.lock:
            return shadow.aggregate.report()

    def percent(self, name: str) -> int:
        """The mirrored share of ``name``'s traffic, 0 when off."""
        shadow = self._shadows.get(name)
        return 0 if shadow is None else shadow.percent

    def reports(self) -> dict[str, ShadowReport]:
        """Every deployment's current report (for /metrics)."""
        found = {}
        for name, shadow in list(self._shadows.items()):
            with shadow.lock:
                found[name] = shadow.aggregate.report()
        return found

    def gate_report(self, name: str) -> ShadowReport | None:
        """The report the promotion gate decides on, with the pairs mirrored so far
        drained and scored first; None when no shadow runs for ``name``'s current pair.
        The decision is :func:`bgserve.domain.shadow.check_shadow_gate`'s. Raises
        BackendError when the data plane cannot be drained."""
        shadow = self._shadows.get(name)
        if shadow is None or not self._check_pair(name, shadow):
            return None
        with shadow.lock:
            self._collect_locked(name, shadow)
            return shadow.aggregate.report()

    def check(self, name: str, state: DeploymentState) -> Check | None:
        """The shadow comparison as a plan's analysis check: None when no shadow runs for
        ``state``'s pair; inconclusive below the minimum of pairs; else its verdict."""
        shadow = self._shadows.get(name)
        if shadow is None or not _same_pair(shadow.aggregate, state):
            return None
        with shadow.lock:
            report = shadow.aggregate.report()
        numbers = {
            "pairs": report.pairs,
            "needed": report.min_pairs,
            "differing": report.differing,
            "green_errors": report.green_errors,
            "similarity_mean": report.similarity.mean,
        }
        if not report.conclusive:
            reason = f"shadow: {report.pairs} mirrored pairs, {report.min_pairs} needed"
            return Check("shadow", Outcome.INCONCLUSIVE, reason, numbers)
        if report.verdict.passed:
            reason = f"shadow: {report.pairs} pairs, {report.differing} differing, passed"
            return Check("shadow", Outcome.PASS, reason, numbers)
        reason = "shadow: " + "; ".join(report.verdict.reasons)
        return Check("shadow", Outcome.FAIL, reason, numbers)

    # background collection

    def start(self) -> None:
        """Collect every ``interval`` seconds on a daemon thread until :meth:`close`."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="bgserve-shadow", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop collecting and turn every mirror off. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for name, shadow in list(self._shadows.items()):
            if shadow.percent:
                self._turn_off(name, shadow)

    def collect_once(self) -> None:
        """Drain and score every active mirror; reset those whose pair changed."""
        for name, shadow in list(self._shadows.items()):
            try:
                if self._check_pair(name, shadow) and shadow.percent:
                    self._collect(name, shadow)
            except BgserveError as exc:
                log.warning("shadow collection of %s failed: %s", name, exc.message)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.interval):
            self.collect_once()

    def _check_pair(self, name: str, shadow: _Shadow) -> bool:
        """True while the deployment still has the report's pair; else drop the report."""
        try:
            state = self.deployments.get_deployment(name).state
        except NotFound:
            state = None
        if state is not None and _same_pair(shadow.aggregate, state):
            return True
        log.info("%s: blue/green pair changed; shadow report reset, mirroring off", name)
        if shadow.percent:
            self._turn_off(name, shadow)
        with self._guard:
            self._shadows.pop(name, None)
        return False

    def _collect(self, name: str, shadow: _Shadow) -> None:
        with shadow.lock:
            self._collect_locked(name, shadow)
        limit = shadow.max_pairs
        if limit is not None and shadow.percent and shadow.aggregate.pairs >= limit:
            self._turn_off(name, shadow)

    def _collect_locked(self, name: str, shadow: _Shadow) -> None:
        if name not in self._shadows:
            return
        batch = self._source(name).shadow_pairs(name)
        aggregate, settings = shadow.aggregate, self.settings
        errors = 0
        for raw in batch.pairs:
            pair = parse_pair(raw)
            if pair is None:
                continue
            errors += pair.green is None
            scored, blue, green = score_pair(
                pair, settings.scorer, shadow.assertions, keep_texts=settings.store_inputs
            )
            aggregate.add(scored, blue, green)
        # The data plane's count covers the pairs above and the copies that sent none.
        aggregate.add_counts(batch.dropped, max(batch.green_errors, errors))

    def _turn_off(self, name: str, shadow: _Shadow) -> None:
        shadow.percent = 0
        try:
            self._source(name).set_shadow(name, 0, self.settings.max_queue)
        except BgserveError as exc:
            log.warning("could not turn mirroring of %s off: %s", name, exc.message)

    def _source(self, name: str) -> ShadowTraffic:
        if not isinstance(self.backend, ShadowTraffic):
            raise IllegalTransition(
                f"the serving backend of {name} cannot mirror traffic with paired answers "
                "(only the local backend can; see the shadow traffic docs)"
            )
        return self.backend

    def _aggregate(self, state: DeploymentState) -> ShadowAggregate:
        assert state.green is not None
        settings = self.settings
        return ShadowAggregate(
            state.blue,
            state.green,
            thresholds=settings.thresholds,
            min_pairs=settings.min_pairs,
            keep=settings.keep,
        )


def _same_pair(aggregate: ShadowAggregate, state: DeploymentState) -> bool:
    return aggregate.pair == state.pair
