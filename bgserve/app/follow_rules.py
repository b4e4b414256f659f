"""Follow rules as the API and the CLI see them: set, read, list and stop a deployment's
rule, and take in MLflow webhook deliveries.

Nothing here stages or compares: a new rule and an accepted delivery only mark rules due
in the store (any replica may do that) and wake the follow engine, which does the work
on the leader (:mod:`bgserve.app.follow_engine`). A delivery is answered as soon as it is
recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bgserve.app.follow_engine import FollowEngine
from bgserve.app.follow_webhook import Delivery, WebhookVerifier
from bgserve.app.service import Service
from bgserve.domain.follow import Progress, progress_of
from bgserve.domain.follow_rule import Followed, FollowRule, Part, make_rule, rule_json, rule_of
from bgserve.domain.plan import Plan, plan_json, plan_of
from bgserve.domain.state import DeploymentState, Transition, observation
from bgserve.errors import NotFound
from bgserve.store.follow_store import FollowStore, StoredRule

log = logging.getLogger("bgserve.follow")

ALIAS_EVENTS: dict[str, Part] = {
    "prompt_alias.created": "prompt",
    "model_version_alias.created": "model",
}
"""The MLflow events that move an alias (``set_prompt_alias`` and
``set_registered_model_alias`` send them, the first move and every later one alike)."""


class NameChecker(Protocol):
    """Whether a model or prompt exists (the follow registry)."""

    def require(self, part: Part, name: str) -> None: ...


@dataclass(frozen=True)
class RuleRequest:
    """A rule as asked for; names left out are blue's, the golden set the prompt's name."""

    prompt_alias: str | None = None
    prompt_name: str | None = None
    model_alias: str | None = None
    model_name: str | None = None
    golden_set: str | None = None
    auto_promote: bool = False
    plan: Plan | None = None
    shadow_percent: int = 0


@dataclass(frozen=True)
class RuleView:
    """A stored rule: what it follows, what it did last, its last trigger, and whether a
    trigger waits to be handled."""

    rule: FollowRule
    progress: Progress
    trigger: Mapping[str, Any] | None
    pending: bool
    updated_at: datetime


def load_rule(row: StoredRule) -> FollowRule:
    """The rule a stored row holds. Raises KeyError, ValueError, TypeError."""
    return rule_of(row.deployment, row.rule, plan_of(row.rule.get("plan")))


def view_of(row: StoredRule) -> RuleView:
    """A stored row as a view. Raises KeyError, ValueError, TypeError."""
    return RuleView(
        load_rule(row),
        progress_of(row.progress),
        row.trigger,
        row.pending_seq > row.handled_seq,
        row.updated_at,
    )


class Following:
    """Follow rules and webhook deliveries, for the API, the CLI and the dashboard."""

    def __init__(
        self,
        store: FollowStore,
        service: Service,
        names: NameChecker,
        verifier: WebhookVerifier,
        engine: FollowEngine,
        *,
        golden: Callable[[str], object],
    ) -> None:
        self.store = store
        self.service = service
        self.names = names
        self.verifier = verifier
        self.engine = engine
        self.golden = golden

    def set_rule(self, name: str, request: RuleRequest, principal: str) -> RuleView:
        """Make ``name`` follow the aliases ``request`` names (replacing its rule) and look
        at them at once. Raises NotFound (deployment, model, prompt or golden set),
        InvalidInput (a bad rule), RegistryUnavailable."""
        blue = self.service.get_release(self.service.get_deployment(name).state.blue)
        followed = []
        if request.prompt_alias is not None:
            prompt = request.prompt_name or blue.prompt_name
            followed.append(Followed("prompt", prompt, request.prompt_alias))
        if request.model_alias is not None:
            model = request.model_name or blue.model_name
            followed.append(Followed("model", model, request.model_alias))
        prompts = [f.name for f in followed if f.part == "prompt"]
        golden_set = request.golden_set or (prompts[0] if prompts else blue.prompt_name)
        rule = make_rule(
            name,
            followed,
            golden_set,
            auto_promote=request.auto_promote,
            plan=request.plan or (self.service.default_plan() if request.auto_promote else None),
            shadow_percent=request.shadow_percent,
        )
        self.golden(rule.golden_set)
        for one in rule.followed:
            self.names.require(one.part, one.name)
        trigger = {"source": "rule", "uri": ", ".join(f.uri for f in followed), "by": principal}
        stored = self.store.put_rule(
            name, rule_json(rule, plan_json(rule.plan)), trigger | {"at": _iso()}, _now()
        )
        self._record(name, principal, "follow", f"follows {describe(rule)}")
        self.engine.wake()
        return view_of(stored)

    def find(self, name: str) -> RuleView | None:
        """The rule of ``name``, None when it follows nothing (or its rule cannot be read)."""
        row = self.store.get_rule(name)
        if row is None:
            return None
        try:
            return view_of(row)
        except (KeyError, ValueError, TypeError) as exc:
            log.warning("the follow rule of %s cannot be read: %s", name, exc)
            return None

    def get(self, name: str) -> RuleView:
        """The rule of ``name``. Raises NotFound (no deployment, or it follows nothing)."""
        self.service.get_deployment(name)
        found = self.find(name)
        if found is None:
            raise NotFound(f"deployment {name!r} follows no alias: set a follow rule first")
        return found

    def list_rules(self) -> list[RuleView]:
        """Every readable rule, by deployment name."""
        views = []
        for row in self.store.list_rules():
            try:
                views.append(view_of(row))
            except (KeyError, ValueError, TypeError) as exc:
                log.warning("the follow rule of %s cannot be read: %s", row.deployment, exc)
        return views

    def stop(self, name: str, principal: str) -> bool:
        """Stop following (a handling under way finishes); whether ``name`` had a rule.
        Idempotent. Raises NotFound for an unknown deployment."""
        self.service.get_deployment(name)
        removed = self.store.delete_rule(name)
        if removed:
            self._record(name, principal, "unfollow", "follows no alias any more")
        return removed

    def receive(self, headers: Mapping[str, str], body: bytes) -> tuple[Delivery, list[str]]:
        """Verify an MLflow delivery, record it against replays and mark the rules it
        concerns due; the delivery and those deployments. Raises Forbidden (webhooks off),
        Unauthorized (a bad signature or timestamp), InvalidInput (not an MLflow event),
        Conflict (a replay)."""
        delivery = self.verifier.verify(headers, body)
        now = _now()
        keep = timedelta(seconds=2 * self.verifier.max_age_s + 60)
        marked = self.store.receive(
            delivery.delivery_id, now, now - keep, lambda rows: _triggers(delivery, rows)
        )
        if marked:
            self.engine.wake()
        return delivery, marked

    def _record(self, name: str, principal: str, action: str, reason: str) -> None:
        def noted(state: DeploymentState) -> Transition:
            return observation(state, action, reason)

        self.service.executor.run(name, principal, noted)


def describe(rule: FollowRule) -> str:
    """``prompts:/p@candidate on golden set p; auto-promote with plan [10, 50, 100]``."""
    text = f"{', '.join(f.uri for f in rule.followed)} on golden set {rule.golden_set}"
    if rule.auto_promote and rule.plan is not None:
        text += f"; auto-promote with plan {list(rule.plan.steps)}"
    if rule.shadow_percent:
        text += f"; shadow {rule.shadow_percent}%"
    return text


def _triggers(delivery: Delivery, rows: list[StoredRule]) -> dict[str, dict[str, Any]]:
    """The rules ``delivery`` concerns, each with its trigger."""
    part = ALIAS_EVENTS.get(delivery.event)
    name, alias = delivery.text("name"), delivery.text("alias")
    if part is None or name is None or alias is None:
        return {}
    version = delivery.text("version")
    trigger = {
        "source": "webhook",
        "event": delivery.event,
        "uri": Followed(part, name, alias).uri,
        "version": int(version) if version and version.isdigit() else version,
        "delivery_id": delivery.delivery_id,
        "at": _iso(),
    }
    chosen = {}
    for row in rows:
        try:
            rule = load_rule(row)
        except (KeyError, ValueError, TypeError):
            continue
        if rule.follows(part, name, alias):
            chosen[row.deployment] = trigger
    return chosen


def _now() -> datetime:
    return datetime.now(UTC)


def _iso() -> str:
    return _now().isoformat()
