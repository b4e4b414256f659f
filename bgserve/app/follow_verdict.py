"""Writing a follow rule's verdict back into MLflow: tags on the candidate's prompt and
model versions (MLflow's UI shows them on each version's page) and on the comparison's
run, and the link to the report."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from bgserve.domain.follow import Parts
from bgserve.domain.follow_rule import PART_KINDS, FollowRule, Part
from bgserve.errors import BgserveError

log = logging.getLogger("bgserve.follow")

Trigger = Mapping[str, Any]


class AliasRegistry(Protocol):
    """Alias lookups and verdict tags (:class:`bgserve.registry.follow_registry.FollowRegistry`)."""

    def alias_target(self, part: Part, name: str, alias: str) -> int | None:
        """The version ``alias`` points at, None when unset. Raises NotFound,
        RegistryUnavailable."""
        ...

    def tag_version(self, part: Part, name: str, version: int, tags: Mapping[str, str]) -> None:
        """Tag one model or prompt version. Raises NotFound, RegistryUnavailable."""
        ...

    def tag_run(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Tag one run. Raises NotFound, RegistryUnavailable."""
        ...


@dataclass(frozen=True)
class ReportLinks:
    """Where a verdict's report is read: the comparison's MLflow run, else bgserve's own
    comparison route when ``public_url`` is known."""

    public_url: str = ""

    def report(self, deployment: str, run_url: str | None) -> str | None:
        """The link for a verdict on ``deployment``; None when no place is known."""
        if run_url:
            return run_url
        if self.public_url:
            return f"{self.public_url.rstrip('/')}/deployments/{deployment}/comparison"
        return None


def describe_trigger(trigger: Trigger) -> str:
    """``webhook prompt_alias.created prompts:/p@candidate -> 3``, for people."""
    source = str(trigger.get("source", "?"))
    event = f" {trigger['event']}" if trigger.get("event") else ""
    version = f" -> {trigger['version']}" if trigger.get("version") is not None else ""
    return f"{source}{event} {trigger.get('uri', '')}{version}".strip()


class VerdictWriter:
    """Tags candidates and comparison runs in one MLflow registry."""

    def __init__(self, registry: AliasRegistry, links: ReportLinks | None = None) -> None:
        self.registry = registry
        self.links = links or ReportLinks()

    def tag_candidate(
        self, rule: FollowRule, candidate: Parts, tags: Mapping[str, str]
    ) -> list[str]:
        """Tag the versions of ``candidate`` that ``rule`` follows; their URIs.
        Idempotent. Raises NotFound, RegistryUnavailable."""
        tagged = []
        for one in rule.followed:
            name, version = candidate.version_of(one.part)
            self.registry.tag_version(one.part, name, version, tags)
            tagged.append(f"{PART_KINDS[one.part]}:/{name}/{version}")
        return tagged

    def tag_run(self, run_id: str, rule: FollowRule, trigger: Trigger) -> None:
        """Name the rule and its trigger on the comparison's run. Never raises (a run that
        cannot be tagged is logged: the versions carry the verdict)."""
        tags = {
            "bgserve.follow": ", ".join(f.uri for f in rule.followed),
            "bgserve.trigger": describe_trigger(trigger),
        }
        try:
            self.registry.tag_run(run_id, tags)
        except BgserveError as exc:
            log.warning("could not tag comparison run %s: %s", run_id, exc.message)
