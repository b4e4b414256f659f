"""Follow rules: a deployment that follows MLflow aliases, and what a move of one asks for.

Pure: no I/O, no clock, no MLflow. A rule follows a prompt alias, a model alias or both
(``prompts:/summarize@candidate``). When the application learns that an alias may have
moved (a webhook, a poll, a new rule), it reads where each followed alias points *now*
and asks :func:`decide` what to do with the deployment as it stands: the decision rests
on the registry's truth, never on what a delivery said, so a delivery that is missed,
repeated or out of order changes nothing that the next one would not.

The candidate is the release the aliases name: each followed part at its alias's version,
the other part as blue has it. Then:

=====================================================  ==========================
the deployment                                         decision
=====================================================  ==========================
an alias is unset, or the candidate is blue (live)     ignore
the rule already wrote this candidate's verdict        ignore
a plan runs, or green takes traffic                    wait (until it changes)
green is the candidate, not compared yet / compared    compare / report
green is another team's release, staged at 0%          wait (until it changes)
otherwise (no green, a reverted one, the rule's own)   stage the candidate
=====================================================  ==========================

A passing verdict is promoted only when the rule says ``auto_promote``, and then only
through its plan, whose first step is below 100 so live analysis runs before the cutover;
a failing one never is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bgserve.domain.follow_rule import Followed, FollowRule, Part
from bgserve.domain.release import Release

VERDICT_TAG = "bgserve.verdict"
PASSED, FAILED, SUPERSEDED = "passed", "failed", "superseded"


@dataclass(frozen=True)
class Parts:
    """A release's model and prompt at fixed versions: what a candidate is."""

    model_name: str
    model_version: int
    prompt_name: str
    prompt_version: int

    @property
    def model_uri(self) -> str:
        return f"models:/{self.model_name}/{self.model_version}"

    @property
    def prompt_uri(self) -> str:
        return f"prompts:/{self.prompt_name}/{self.prompt_version}"

    def describe(self) -> str:
        """``models:/m/1 + prompts:/p/2``, for messages."""
        return f"{self.model_uri} + {self.prompt_uri}"

    def version_of(self, part: Part) -> tuple[str, int]:
        """The name and version of ``part``."""
        if part == "model":
            return self.model_name, self.model_version
        return self.prompt_name, self.prompt_version


def parts_of(release: Release) -> Parts:
    """The model and prompt of ``release``."""
    return Parts(
        release.model_name, release.model_version, release.prompt_name, release.prompt_version
    )


def candidate(blue: Parts, targets: Mapping[Followed, int | None]) -> Parts | None:
    """The release the followed aliases name: each followed part at its alias's version,
    the other as blue has it; None while a followed alias is unset."""
    chosen = blue
    for one, version in targets.items():
        if version is None:
            return None
        if one.part == "model":
            chosen = replace(chosen, model_name=one.name, model_version=version)
        else:
            chosen = replace(chosen, prompt_name=one.name, prompt_version=version)
    return chosen


def release_name(deployment: str, parts: Parts) -> str:
    """The name of the release a rule registers for ``parts`` (a DNS-1123 label)."""
    suffix = f"-m{parts.model_version}-p{parts.prompt_version}"
    return deployment[: 63 - len(suffix)].rstrip("-") + suffix


@dataclass(frozen=True)
class Situation:
    """The deployment as the decision sees it."""

    blue: Parts
    green_id: int | None = None
    green: Parts | None = None
    green_weight: int = 0
    plan_running: bool = False
    reverted: bool = False
    compared: bool = False
    """A comparison of the current blue/green pair is stored."""


@dataclass(frozen=True)
class Progress:
    """What a rule has done so far (kept with the rule).

    ``aliases`` are the versions the followed aliases had at the last look (a poll
    compares against them); ``staged`` is the release the rule staged last; ``done`` the
    candidate whose verdict it wrote back; ``outcome`` its last step, for people;
    ``waiting_version`` the deployment version a wait waits to see change; ``retry_at``
    when a failed attempt is tried again, after ``failures`` in a row.
    """

    aliases: Mapping[str, int | None] = field(default_factory=dict)
    staged: int | None = None
    done: Parts | None = None
    outcome: Mapping[str, Any] = field(default_factory=dict)
    waiting_version: int | None = None
    retry_at: float | None = None
    failures: int = 0


@dataclass(frozen=True)
class Ignore:
    """Nothing to do."""

    reason: str


@dataclass(frozen=True)
class Wait:
    """Another green is in flight: look again when the deployment changes."""

    reason: str


@dataclass(frozen=True)
class Stage:
    """Register (or reuse) the candidate's release and stage it as green."""

    parts: Parts
    supersedes: int | None


@dataclass(frozen=True)
class Compare:
    """Green is the candidate and has no comparison yet."""

    release_id: int


@dataclass(frozen=True)
class Report:
    """Green is the candidate and was compared: write the verdict back."""

    release_id: int


Decision = Ignore | Wait | Stage | Compare | Report


def decide(progress: Progress, situation: Situation, target: Parts | None) -> Decision:
    """What the rule does for the candidate ``target`` on the deployment as it stands
    (see the module's table)."""
    if target is None:
        return Ignore("a followed alias is not set")
    if target == situation.blue:
        return Ignore(f"{target.describe()} is live (blue) already")
    if progress.done == target:
        return Ignore(f"the verdict on {target.describe()} was written already")
    if situation.plan_running:
        return Wait(f"a promotion plan of green release {situation.green_id} is under way")
    if situation.green_weight > 0:
        return Wait(
            f"green release {situation.green_id} takes {situation.green_weight}% of the traffic"
        )
    if situation.green == target and situation.green_id is not None:
        if situation.compared:
            return Report(situation.green_id)
        return Compare(situation.green_id)
    foreign = situation.green_id not in (None, progress.staged)
    if foreign and not situation.reverted:
        return Wait(
            f"green release {situation.green_id} was staged by someone else: the candidate "
            "is staged once it is promoted or reverted"
        )
    return Stage(target, supersedes=situation.green_id)


def should_promote(rule: FollowRule, passed: bool) -> bool:
    """Whether the rule starts its plan after a verdict: only a pass, only with
    ``auto_promote`` (whose plan :func:`make_rule` checked)."""
    return passed and rule.auto_promote and rule.plan is not None


def is_due(
    pending_seq: int,
    handled_seq: int,
    progress: Progress,
    deployment_version: int | None,
    now: float,
) -> bool:
    """Whether the rule has something to look at: a trigger not handled yet, a failed
    attempt whose retry time came, or a wait on a deployment that has changed since."""
    if pending_seq > handled_seq:
        return True
    if progress.retry_at is not None and now >= progress.retry_at:
        return True
    waiting = progress.waiting_version
    return waiting is not None and deployment_version is not None and deployment_version != waiting


def retry_delay(failures: int, base_s: float, cap_s: float = 600.0) -> float:
    """Seconds before the next attempt after ``failures`` in a row: doubling from
    ``base_s``, at most ``cap_s``."""
    return float(min(base_s * 2 ** max(failures - 1, 0), cap_s))


def verdict_tags(
    verdict: str,
    deployment: str,
    *,
    release: Release | None = None,
    blue: Parts | None = None,
    run_id: str | None = None,
    report_url: str | None = None,
    reasons: Sequence[str] = (),
) -> dict[str, str]:
    """The tags written on a candidate's prompt and model versions: the deployment, the
    release, what it was compared with, the comparison run, a link, and the verdict last
    (tags are set one at a time: whoever sees the verdict sees the rest)."""
    tags = {"bgserve.deployment": deployment}
    if release is not None:
        tags["bgserve.release"] = f"{release.id} ({release.name})"
    if blue is not None:
        tags["bgserve.compared_with"] = blue.describe()
    if run_id:
        tags["bgserve.comparison_run_id"] = run_id
    if report_url:
        tags["bgserve.report_url"] = report_url
    if reasons:
        tags["bgserve.reasons"] = "; ".join(reasons)[:1000]
    tags[VERDICT_TAG] = verdict
    return tags


def progress_json(progress: Progress) -> dict[str, Any]:
    """The stored form of ``progress``."""
    done = progress.done
    return {
        "aliases": dict(progress.aliases),
        "staged": progress.staged,
        "done": None if done is None else asdict(done),
        "outcome": dict(progress.outcome),
        "waiting_version": progress.waiting_version,
        "retry_at": progress.retry_at,
        "failures": progress.failures,
    }


def progress_of(body: Mapping[str, Any] | None) -> Progress:
    """Progress from its stored form (empty when none is stored)."""
    if not body:
        return Progress()
    done = body.get("done")
    return Progress(
        aliases=dict(body.get("aliases") or {}),
        staged=body.get("staged"),
        done=None if done is None else Parts(**done),
        outcome=dict(body.get("outcome") or {}),
        waiting_version=body.get("waiting_version"),
        retry_at=body.get("retry_at"),
        failures=int(body.get("failures", 0)),
    )
