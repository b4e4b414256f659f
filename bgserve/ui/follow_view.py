"""The deployment page's follow rule: what it follows, its last event and what it did."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bgserve.app.follow_rules import RuleView, describe
from bgserve.ui.html import badge, e, key_values

_KINDS = {
    "compared": "pass",
    "promoting": "pass",
    "waiting": "warn",
    "superseded": "idle",
    "ignored": "idle",
    "failed": "fail",
    "not-promoted": "warn",
}


def _event(trigger: Mapping[str, Any] | None) -> str:
    if not trigger:
        return "<span class='muted'>none yet</span>"
    what = trigger.get("event") or "alias looked at"
    version = f" → {trigger['version']}" if trigger.get("version") is not None else ""
    text = f"{trigger.get('source')}: {what} {trigger.get('uri', '')}{version}"
    at = trigger.get("at")
    return e(text) + (f" <small class='muted'>{e(str(at)[:19])}</small>" if at else "")


def _outcome(outcome: Mapping[str, Any]) -> str:
    if not outcome:
        return "<span class='muted'>nothing yet</span>"
    action = str(outcome.get("action", "?"))
    return f"{badge(action, _KINDS.get(action, 'idle'))} {e(outcome.get('reason', ''))}"


def follow_section(view: RuleView | None) -> str:
    """The rule as a table, or a line saying the deployment follows nothing."""
    if view is None:
        return (
            "<p class='muted'>This deployment follows no MLflow alias "
            "(<code>bgserve follow NAME --prompt-alias candidate</code>).</p>"
        )
    facts = {
        "follows": e(describe(view.rule)),
        "last event": _event(view.trigger) + (" (pending)" if view.pending else ""),
        "last outcome": _outcome(view.progress.outcome),
    }
    return key_values(facts)
