"""The one handler of follow rules: whatever told bgserve that an alias may have moved (a
webhook, a poll, a new rule), this does the work, on the leader's follow engine.

A handling reads where the followed aliases point now, the deployment as it stands, and
asks :func:`bgserve.domain.follow.decide` what to do; then it registers (or reuses) the
candidate's release and stages it through the executor, runs the golden comparison,
writes the verdict back into MLflow (tags on the candidate's prompt and model versions and
on the comparison run), records each step in the history with principal ``bgserve`` and
the trigger, and starts the rule's plan when the rule and the verdict allow it. Before it
compares and before it promotes it reads the aliases again: a newer move supersedes the
candidate there, cleanly, and is handled next.

Because every handling decides on the registry's truth and the stored state, handling a
rule twice for one move changes nothing the first did not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from bgserve.app.comparer import CompareOptions, Comparer
from bgserve.app.executor import SYSTEM
from bgserve.app.follow_verdict import AliasRegistry, ReportLinks, Trigger, VerdictWriter
from bgserve.app.service import Service
from bgserve.domain import rollout
from bgserve.domain.follow import (
    FAILED,
    PASSED,
    SUPERSEDED,
    Compare,
    Ignore,
    Parts,
    Progress,
    Situation,
    Stage,
    Wait,
    candidate,
    decide,
    parts_of,
    release_name,
    retry_delay,
    should_promote,
    verdict_tags,
)
from bgserve.domain.follow_rule import Followed, FollowRule
from bgserve.domain.release import Release
from bgserve.domain.state import Transition, observation
from bgserve.errors import BgserveError
from bgserve.evaluation.golden import GoldenCase
from bgserve.store import StoredDeployment

log = logging.getLogger("bgserve.follow")


class ShadowStarter(Protocol):
    """Starting shadow traffic on a staged green (the shadow collector)."""

    def start_shadow(self, name: str, percent: int) -> object: ...


@dataclass(frozen=True)
class Outcome:
    """What a handling leaves: the rule's progress, and whether the trigger is settled
    (False when a newer move superseded the candidate: the rule is handled again)."""

    progress: Progress
    settled: bool = True


class FollowHandler:
    """Handles one deployment's rule at a time (the follow engine never runs two handlings
    of one deployment at once)."""

    def __init__(
        self,
        service: Service,
        comparer: Comparer,
        registry: AliasRegistry,
        *,
        golden: Callable[[str], list[GoldenCase]],
        shadow: ShadowStarter | None = None,
        links: ReportLinks | None = None,
        retry_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.comparer = comparer
        self.registry = registry
        self.golden = golden
        self.shadow = shadow
        self.writer = VerdictWriter(registry, links)
        self.retry_s = retry_s
        self.clock = clock

    def aliases(self, rule: FollowRule) -> dict[Followed, int | None]:
        """Where each followed alias points now. Raises NotFound, RegistryUnavailable."""
        return {f: self.registry.alias_target(f.part, f.name, f.alias) for f in rule.followed}

    def handle(self, rule: FollowRule, progress: Progress, trigger: Trigger) -> Outcome:
        """Do what the rule's aliases ask for now. Never raises: a failure is the outcome
        (with a retry time), logged."""
        handling = _Handling(self, rule, progress, trigger)
        try:
            return handling.run()
        except BgserveError as exc:
            log.warning("following %s failed: %s", rule.deployment, exc.message)
            return handling.failed(exc.message)
        except Exception as exc:  # a bug must not stop the engine; it is retried later
            log.exception("following %s failed", rule.deployment)
            return handling.failed(f"unexpected error: {exc!r}")

    def now_iso(self) -> str:
        return datetime.fromtimestamp(self.clock(), UTC).isoformat()


class _Handling:
    """One handling of one rule: the steps share the rule, the trigger and the progress."""

    def __init__(
        self, handler: FollowHandler, rule: FollowRule, progress: Progress, trigger: Trigger
    ) -> None:
        self.h = handler
        self.rule = rule
        self.name = rule.deployment
        self.progress = progress
        self.trigger = dict(trigger)
        self.blue: Parts | None = None
        self.target: Parts | None = None

    def run(self) -> Outcome:
        stored = self.h.service.get_deployment(self.name)
        self.blue = parts_of(self.h.service.get_release(stored.state.blue))
        self.target = self._look()
        self.progress = replace(self.progress, waiting_version=None, retry_at=None)
        decision = decide(self.progress, self._situation(stored), self.target)
        if isinstance(decision, Ignore):
            return self._note("ignored", decision.reason)
        if isinstance(decision, Wait):
            self.progress = replace(self.progress, waiting_version=stored.state.version)
            return self._note("waiting", decision.reason)
        if isinstance(decision, Stage):
            release = self._stage(decision)
            if self._moved():
                return self._superseded(release)
            return self._compare(release)
        release = self.h.service.get_release(decision.release_id)
        if isinstance(decision, Compare):
            return self._compare(release)
        return self._report(release, stored.last_comparison or {})

    def _look(self) -> Parts | None:
        """The candidate the aliases name now (and remember where they point)."""
        assert self.blue is not None
        versions = self.h.aliases(self.rule)
        self.progress = replace(self.progress, aliases={f.uri: v for f, v in versions.items()})
        return candidate(self.blue, versions)

    def _moved(self) -> bool:
        return self._look() != self.target

    def _situation(self, stored: StoredDeployment) -> Situation:
        state = stored.state
        assert self.blue is not None
        green = None if state.green is None else self.h.service.get_release(state.green)
        return Situation(
            blue=self.blue,
            green_id=state.green,
            green=None if green is None else parts_of(green),
            green_weight=state.green_weight,
            plan_running=state.plan is not None,
            reverted=state.reverted,
            compared=state.gate_for_current_pair() is not None,
        )

    # the steps

    def _stage(self, decision: Stage) -> Release:
        release = self._release_for(decision.parts)
        details: dict[str, Any] = self._trace()
        if decision.supersedes is not None:
            details["supersedes"] = decision.supersedes

        def staged(state: rollout.DeploymentState) -> Transition:
            transition = rollout.stage_green(state, release.id)
            return replace(transition, details={**transition.details, **details})

        self.h.service.executor.run(self.name, SYSTEM, staged)
        self.progress = replace(self.progress, staged=release.id)
        self._start_shadow()
        return release

    def _release_for(self, parts: Parts) -> Release:
        """A release of exactly ``parts``: an existing one, else a new one."""
        for release in reversed(self.h.service.list_releases()):
            if parts_of(release) == parts:
                return release
        return self.h.service.register_release(
            release_name(self.name, parts), parts.model_uri, parts.prompt_uri, SYSTEM
        )

    def _start_shadow(self) -> None:
        percent = self.rule.shadow_percent
        if not percent or self.h.shadow is None:
            return
        try:
            self.h.shadow.start_shadow(self.name, percent)
        except BgserveError as exc:
            log.warning("shadow traffic for %s not started: %s", self.name, exc.message)

    def _compare(self, release: Release) -> Outcome:
        cases = self.h.golden(self.rule.golden_set)
        options = CompareOptions(golden_set=self.rule.golden_set, details=self._trace())
        _, report = self.h.comparer.compare(self.name, cases, SYSTEM, options=options)
        return self._report(release, report.model_dump(mode="json"))

    def _report(self, release: Release, body: Mapping[str, Any]) -> Outcome:
        verdict = body.get("verdict") or {}
        passed = bool(verdict.get("passed"))
        run = body.get("mlflow") or {}
        run_id = run.get("run_id")
        tags = verdict_tags(
            PASSED if passed else FAILED,
            self.name,
            release=release,
            blue=self.blue,
            run_id=run_id,
            report_url=self.h.writer.links.report(self.name, run.get("url")),
            reasons=verdict.get("reasons") or (),
        )
        tagged = self._tag(tags)
        if run_id:
            self.h.writer.tag_run(run_id, self.rule, self.trigger)
        word = PASSED if passed else FAILED
        reason = f"verdict {word} on {self._target_text()} written to MLflow ({', '.join(tagged)})"
        self._record("follow-verdict", reason, {"verdict": word, "mlflow_run_id": run_id})
        self.progress = replace(self.progress, done=self.target)
        if not should_promote(self.rule, passed):
            return self._note("compared", reason, verdict=word, release=release.id)
        return self._promote(release, word)

    def _promote(self, release: Release, word: str) -> Outcome:
        if self._moved():
            why = "not promoted: the alias moved on since the comparison"
            return replace(self._note("compared", why, verdict=word), settled=False)
        assert self.rule.plan is not None
        try:
            self.h.service.start_plan(self.name, SYSTEM, self.rule.plan, details=self._trace())
        except BgserveError as exc:
            return self._note("not-promoted", exc.message, verdict=word, release=release.id)
        steps = list(self.rule.plan.steps)
        return self._note("promoting", f"plan {steps} started", verdict=word, release=release.id)

    def _superseded(self, release: Release) -> Outcome:
        tags = verdict_tags(SUPERSEDED, self.name, release=release, blue=self.blue)
        try:
            self._tag(tags)
        except BgserveError as exc:
            log.warning("could not tag the superseded candidate: %s", exc.message)
        reason = f"{self._target_text()} superseded by a newer alias move before its verdict"
        self._record("follow-superseded", reason, {})
        return replace(self._note("superseded", reason, release=release.id), settled=False)

    # writing down

    def _tag(self, tags: Mapping[str, str]) -> list[str]:
        assert self.target is not None
        return self.h.writer.tag_candidate(self.rule, self.target, tags)

    def _record(self, action: str, reason: str, details: Mapping[str, Any]) -> None:
        full = {**details, **self._trace()}

        def noted(state: rollout.DeploymentState) -> Transition:
            return observation(state, action, reason, full)

        self.h.service.executor.run(self.name, SYSTEM, noted)

    def _note(self, action: str, reason: str, **extra: Any) -> Outcome:
        outcome = {"action": action, "reason": reason, "at": self.h.now_iso(), **extra}
        if self.target is not None:
            outcome["candidate"] = self._target_text()
        self.progress = replace(self.progress, outcome=outcome, failures=0)
        return Outcome(self.progress)

    def failed(self, message: str) -> Outcome:
        """The outcome of a handling that failed: retried after a growing delay."""
        failures = self.progress.failures + 1
        retry_at = self.h.clock() + retry_delay(failures, self.h.retry_s)
        outcome = {"action": "failed", "reason": message, "at": self.h.now_iso()}
        if self.target is not None:
            outcome["candidate"] = self._target_text()
        self.progress = replace(
            self.progress, outcome=outcome, failures=failures, retry_at=retry_at
        )
        return Outcome(self.progress)

    def _trace(self) -> dict[str, Any]:
        """What every history event of this handling carries: the trigger and the rule."""
        return {"trigger": self.trigger, "follow": self._uris()}

    def _uris(self) -> list[str]:
        return [f.uri for f in self.rule.followed]

    def _target_text(self) -> str:
        return "?" if self.target is None else self.target.describe()
