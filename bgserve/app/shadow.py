"""The I/O half of shadow traffic: turn mirroring on and off, drain the mirrored pairs,
score them, and gate promotion on the result.

The shadow state is stored with the deployment (:mod:`~bgserve.app.shadow_persistence`):
its configuration (percent, pair limit, assertions) whenever it changes, the report so far
(with its thresholds) every ``save_interval`` seconds while pairs come in, and when
mirroring stops or bgserve closes. Only the leader mirrors: it resumes every stored shadow
when it starts leading (a restart, or a new leader after a failover), and follows
configuration another replica stored by its revision. A follower stores what it is asked
and reads reports from the store. Pairs in flight when the leader goes are lost; the
configuration is not.

Staging a new green or a cutover changes the deployment's blue/green pair; the collector
notices, turns mirroring off and forgets the report, which was about another pair; pairs
the data plane tags with another pair are never counted. Pairs are never logged: they are
live user traffic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bgserve.app.ports import DeploymentReader
from bgserve.app.shadow_bodies import parse_inputs, parse_pair
from bgserve.app.shadow_persistence import (
    DeploymentShadow,
    ShadowStore,
    load_shadow,
    save_shadow,
)
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
    save_interval: float = 2.0


class ShadowCollector:
    """Shadow traffic per deployment: start, stop, collect in the background, report, gate."""

    def __init__(
        self,
        backend: object,
        deployments: DeploymentReader,
        settings: ShadowSettings,
        store: ShadowStore | None = None,
        *,
        leading: bool = True,
    ) -> None:
        self.backend = backend
        self.deployments = deployments
        self.settings = settings
        self.store = store
        self.leading = leading
        self._shadows: dict[str, DeploymentShadow] = {}
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
        if self.leading:
            source.set_shadow(name, percent, self.settings.max_queue)
        with self._guard:
            shadow = self._current(name)
            fresh = shadow is None or not _same_pair(shadow.aggregate, state)
            if shadow is None or fresh:
                shadow = DeploymentShadow(percent, max_pairs, self._aggregate(state))
            shadow.percent, shadow.max_pairs = percent, max_pairs
            shadow.assertions = tuple(assertions)
            if self.leading:
                self._shadows[name] = shadow
            save_shadow(
                self.store, name, shadow, config=True, report=fresh or self.leading, quiet=False
            )
        return self.report(name)

    def stop_shadow(self, name: str) -> ShadowReport | None:
        """Stop mirroring; the report stays readable. Idempotent."""
        self.deployments.get_deployment(name)
        shadow = self._current(name)
        if shadow is None:
            return None
        if self.leading:
            self._collect(name, shadow)  # the pairs already mirrored still count
            self._turn_off(name, shadow)
        else:
            shadow.percent = 0
            save_shadow(self.store, name, shadow, config=True, report=False, quiet=False)
        return shadow.aggregate.report()

    def report(self, name: str) -> ShadowReport:
        """The shadow report of ``name``'s current pair. Raises NotFound."""
        shadow = self._current(name)
        if shadow is None or not self._check_pair(name, shadow):
            raise NotFound(
                f"{name} has no shadow report for its current blue and green: "
                "start mirroring to green first"
            )
        with shadow.lock:
            return shadow.aggregate.report()

    def percent(self, name: str) -> int:
        """The mirrored share of ``name``'s traffic, 0 when off."""
        shadow = self._current(name)
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
        shadow = self._current(name)
        if shadow is None or not self._check_pair(name, shadow):
            return None
        with shadow.lock:
            if self.leading:
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
        """Stop collecting and turn every mirror off, its state stored as it is (the next
        leader resumes it). Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.follow()

    def lead(self) -> None:
        """This replica leads: resume every stored shadow whose pair is still the
        deployment's, mirroring again those that were on. Never raises."""
        self.leading = True
        self._sync()

    def follow(self) -> None:
        """This replica stops leading: store each report, turn mirroring off in the data
        plane (the stored configuration keeps it on for the next leader), forget them
        here. Idempotent."""
        self.leading = False
        with self._guard:
            shadows, self._shadows = self._shadows, {}
        for name, shadow in shadows.items():
            if shadow.dirty:
                save_shadow(self.store, name, shadow, config=False)
            if shadow.percent:
                self._set_shadow(name, 0)

    def collect_once(self) -> None:
        """Follow stored configuration, then drain and score every active mirror and
        store the reports due; reset those whose pair changed. The leader's work only."""
        if not self.leading:
            return
        self._sync()
        for name, shadow in list(self._shadows.items()):
            try:
                if self._check_pair(name, shadow) and shadow.percent:
                    self._collect(name, shadow)
            except BgserveError as exc:
                log.warning("shadow collection of %s failed: %s", name, exc.message)
            if shadow.dirty and time.monotonic() - shadow.saved >= self.settings.save_interval:
                save_shadow(self.store, name, shadow, config=False)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.interval):
            self.collect_once()

    def _current(self, name: str) -> DeploymentShadow | None:
        """The leader's shadow of ``name`` (as it runs), a follower's as stored."""
        if self.leading:
            return self._shadows.get(name)
        return load_shadow(self.store, name)

    def _sync(self) -> None:
        """Apply every stored shadow whose configuration changed since this replica last
        applied it (all of them on taking the lead); drop those no longer stored."""
        if self.store is None:
            return
        try:
            revisions = self.store.shadow_revisions()
        except BgserveError as exc:
            log.warning("could not read the stored shadow state: %s", exc.message)
            return
        for name, revision in revisions.items():
            current = self._shadows.get(name)
            if current is None or current.revision != revision:
                try:
                    self._resume(name, current)
                except BgserveError as exc:
                    log.warning("shadow traffic of %s not resumed: %s", name, exc.message)
        for gone_name, gone in self._drop_unstored(set(self._shadows) - set(revisions)):
            if gone.percent:
                self._set_shadow(gone_name, 0)

    def _drop_unstored(self, names: set[str]) -> list[tuple[str, DeploymentShadow]]:
        """Forget the shadows of ``names`` that are still not stored. Read again under the
        guard: a shadow :meth:`start_shadow` stored since the first read is kept."""
        if not names or self.store is None:
            return []
        with self._guard:
            try:
                stored = set(self.store.shadow_revisions())
            except BgserveError as exc:
                log.warning("could not read the stored shadow state: %s", exc.message)
                return []
            return [(n, self._shadows.pop(n)) for n in names - stored if n in self._shadows]

    def _resume(self, name: str, current: DeploymentShadow | None) -> None:
        stored = load_shadow(self.store, name)
        if stored is None:
            return
        try:
            state = self.deployments.get_deployment(name).state
        except NotFound:
            state = None
        if state is None or not _same_pair(stored.aggregate, state):
            log.info("%s: the stored shadow report is about another pair; forgotten", name)
            if self.store is not None:
                self.store.delete_shadow(name)
            return
        if current is not None and _same_pair(current.aggregate, state):
            stored.aggregate, stored.dirty = current.aggregate, current.dirty
        with self._guard:
            self._shadows[name] = stored
        applied = stored.revision
        stored.revision = 0  # until the data plane took it: the next round tries again
        self._source(name).set_shadow(name, stored.percent, self.settings.max_queue)
        stored.revision = applied
        if stored.percent:
            log.info("%s: mirroring %d%% to green resumed", name, stored.percent)

    def _check_pair(self, name: str, shadow: DeploymentShadow) -> bool:
        """True while the deployment still has the report's pair; else drop the report."""
        try:
            state = self.deployments.get_deployment(name).state
        except NotFound:
            state = None
        if state is not None and _same_pair(shadow.aggregate, state):
            return True
        log.info("%s: blue/green pair changed; shadow report reset, mirroring off", name)
        if shadow.percent and self.leading:
            self._set_shadow(name, 0)
        with self._guard:
            self._shadows.pop(name, None)
        if self.store is not None:
            try:
                self.store.delete_shadow(name)
            except BgserveError as exc:
                log.warning("could not forget the shadow state of %s: %s", name, exc.message)
        return False

    def _collect(self, name: str, shadow: DeploymentShadow) -> None:
        with shadow.lock:
            self._collect_locked(name, shadow)
        limit = shadow.max_pairs
        if limit is not None and shadow.percent and shadow.aggregate.pairs >= limit:
            self._turn_off(name, shadow)

    def _collect_locked(self, name: str, shadow: DeploymentShadow) -> None:
        if name not in self._shadows:
            return
        batch = self._source(name).shadow_pairs(name)
        aggregate, settings = shadow.aggregate, self.settings
        errors = 0
        for raw in batch.pairs:
            if raw.blue_release is not None and (raw.blue_release, raw.green_release) != (
                aggregate.blue,
                aggregate.green,
            ):
                continue  # taken for another pair: it says nothing of this green
            pair = parse_pair(raw)
            if pair is None:
                continue
            errors += pair.green is None
            scored, blue, green = score_pair(
                pair, settings.scorer, shadow.assertions, keep_texts=settings.store_inputs
            )
            aggregate.add(scored, blue, green)
        # The data plane's count covers the pairs above and the copies that sent none.
        aggregate.add_counts(batch.dropped, max(batch.green_errors, errors), batch.over_bytes)
        shadow.dirty = shadow.dirty or bool(batch.pairs or batch.dropped or batch.green_errors)

    def _turn_off(self, name: str, shadow: DeploymentShadow) -> None:
        shadow.percent = 0
        self._set_shadow(name, 0)
        save_shadow(self.store, name, shadow, config=True)

    def _set_shadow(self, name: str, percent: int) -> None:
        try:
            self._source(name).set_shadow(name, percent, self.settings.max_queue)
        except BgserveError as exc:
            log.warning("could not set mirroring of %s to %d%%: %s", name, percent, exc.message)

    def _source(self, name: str) -> ShadowTraffic:
        if not isinstance(self.backend, ShadowTraffic):
            raise IllegalTransition(
                f"the serving backend of {name} cannot mirror traffic with paired answers "
                "(the local backend can, and KServe behind a gateway or Istio: see docs/shadow.md)"
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
