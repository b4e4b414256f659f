"""Follow rules as data: the aliases a deployment follows, what it does when one moves,
the checks a rule must pass, and its stored form. Pure: no I/O.

What a move asks for is :func:`bgserve.domain.follow.decide`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from bgserve.domain.plan import Plan
from bgserve.errors import InvalidInput

Part = Literal["model", "prompt"]
PART_KINDS: dict[Part, str] = {"model": "models", "prompt": "prompts"}

ALIAS = re.compile(r"[A-Za-z0-9_-]{1,255}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
RESERVED_ALIAS_SUFFIXES = ("-live", "-previous")
"""bgserve moves ``<deployment>-live`` and ``-previous`` itself at every cutover: a rule
following one would answer bgserve's own moves."""


@dataclass(frozen=True)
class Followed:
    """One alias a rule follows: ``prompts:/summarize@candidate``."""

    part: Part
    name: str
    alias: str

    @property
    def uri(self) -> str:
        return f"{PART_KINDS[self.part]}:/{self.name}@{self.alias}"


@dataclass(frozen=True)
class FollowRule:
    """What a deployment follows and what it does when an alias moves.

    ``plan`` is the promotion plan ``auto_promote`` runs (None without auto-promotion);
    ``shadow_percent`` mirrors that share of live traffic to each candidate it stages.
    """

    deployment: str
    followed: tuple[Followed, ...]
    golden_set: str
    auto_promote: bool = False
    plan: Plan | None = None
    shadow_percent: int = 0

    def follows(self, part: Part, name: str, alias: str) -> bool:
        """Whether a move of ``alias`` on ``name`` concerns this rule."""
        return any(f == Followed(part, name, alias) for f in self.followed)


def make_rule(
    deployment: str,
    followed: Sequence[Followed],
    golden_set: str,
    *,
    auto_promote: bool = False,
    plan: Plan | None = None,
    shadow_percent: int = 0,
) -> FollowRule:
    """A checked rule. Raises InvalidInput naming the field at fault: no alias, two of one
    part, a malformed or reserved alias, a plan without ``auto_promote``, or a plan whose
    first step is 100 (a cutover with no live analysis)."""
    if not followed:
        raise InvalidInput(
            "follow at least one alias: prompt_alias, model_alias or both", field="prompt_alias"
        )
    parts = [f.part for f in followed]
    if len(set(parts)) != len(parts):
        raise InvalidInput("follow at most one alias of the model and one of the prompt")
    for one in followed:
        _check_followed(one)
    if not 0 <= shadow_percent <= 100:
        raise InvalidInput("shadow_percent must be 0 to 100", field="shadow_percent")
    if plan is not None and not auto_promote:
        raise InvalidInput("a plan is only used with auto_promote", field="plan")
    if auto_promote:
        plan = _checked_auto_plan(plan)
    return FollowRule(deployment, tuple(followed), golden_set, auto_promote, plan, shadow_percent)


def _check_followed(one: Followed) -> None:
    where = f"{one.part}_alias"
    if not NAME.fullmatch(one.name):
        raise InvalidInput(f"{one.part} name {one.name!r} is not an MLflow name", field=where)
    if not ALIAS.fullmatch(one.alias) or one.alias == "latest":
        raise InvalidInput(
            f"alias {one.alias!r} is not an alias you can move: use letters, digits, '_' and "
            "'-' (and not 'latest', which MLflow moves itself)",
            field=where,
        )
    if one.alias.endswith(RESERVED_ALIAS_SUFFIXES):
        raise InvalidInput(
            f"alias {one.alias!r} ends like the aliases bgserve moves at each cutover "
            f"({', '.join(RESERVED_ALIAS_SUFFIXES)}): follow an alias people move",
            field=where,
        )


def _checked_auto_plan(plan: Plan | None) -> Plan:
    if plan is None:
        raise InvalidInput("auto_promote needs a plan", field="plan")
    if plan.steps[0] >= 100:
        raise InvalidInput(
            f"an automatic promotion goes through live analysis: plan.steps {list(plan.steps)} "
            "must start below 100, e.g. [10, 50, 100]",
            field="plan.steps",
        )
    return replace(plan, force=False)


def rule_json(rule: FollowRule, plan_body: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stored form of ``rule`` (its plan already in stored form)."""
    return {
        "followed": [{"part": f.part, "name": f.name, "alias": f.alias} for f in rule.followed],
        "golden_set": rule.golden_set,
        "auto_promote": rule.auto_promote,
        "plan": None if plan_body is None else dict(plan_body),
        "shadow_percent": rule.shadow_percent,
    }


def rule_of(deployment: str, body: Mapping[str, Any], plan: Plan | None) -> FollowRule:
    """A rule from its stored form (its plan already read). Raises KeyError, ValueError."""
    followed = tuple(
        Followed(_part(f["part"]), str(f["name"]), str(f["alias"])) for f in body["followed"]
    )
    return FollowRule(
        deployment,
        followed,
        str(body["golden_set"]),
        bool(body.get("auto_promote", False)),
        plan,
        int(body.get("shadow_percent", 0)),
    )


def _part(value: object) -> Part:
    if value == "model":
        return "model"
    if value == "prompt":
        return "prompt"
    raise ValueError(f"unknown followed part {value!r}")
