"""Follow rules' pure decisions: the candidate an alias move names, what the deployment
as it stands asks for, which rules are valid, when a rule is due."""

from __future__ import annotations

import pytest

from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.follow import (
    Compare,
    Ignore,
    Parts,
    Progress,
    Report,
    Situation,
    Stage,
    Wait,
    candidate,
    decide,
    is_due,
    progress_json,
    progress_of,
    release_name,
    retry_delay,
    should_promote,
    verdict_tags,
)
from bgserve.domain.follow_rule import Followed, make_rule, rule_json, rule_of
from bgserve.domain.plan import make_plan, plan_json, plan_of
from bgserve.errors import InvalidInput

BLUE = Parts("m", 1, "p", 1)
NEW_PROMPT = Parts("m", 1, "p", 2)
NEWER_PROMPT = Parts("m", 1, "p", 3)
PROMPT = Followed("prompt", "p", "candidate")
MODEL = Followed("model", "m", "candidate")
PLAN = make_plan([10, 50, 100], 30.0, AnalysisSettings())


def test_the_candidate_is_each_followed_alias_over_blues_other_part() -> None:
    assert candidate(BLUE, {PROMPT: 2}) == NEW_PROMPT
    assert candidate(BLUE, {MODEL: 4}) == Parts("m", 4, "p", 1)
    assert candidate(BLUE, {PROMPT: 2, MODEL: 4}) == Parts("m", 4, "p", 2)
    other = Followed("prompt", "q", "cand")
    assert candidate(BLUE, {other: 7}) == Parts("m", 1, "q", 7)
    assert candidate(BLUE, {PROMPT: None}) is None


@pytest.mark.parametrize(
    ("situation", "progress", "target", "expected"),
    [
        (Situation(BLUE), Progress(), None, Ignore),
        (Situation(BLUE), Progress(), BLUE, Ignore),
        (Situation(BLUE), Progress(done=NEW_PROMPT), NEW_PROMPT, Ignore),
        (Situation(BLUE), Progress(), NEW_PROMPT, Stage),
        (Situation(BLUE, 5, NEWER_PROMPT, plan_running=True), Progress(staged=5), NEW_PROMPT, Wait),
        (Situation(BLUE, 5, NEWER_PROMPT, green_weight=10), Progress(staged=5), NEW_PROMPT, Wait),
        (Situation(BLUE, 5, NEWER_PROMPT), Progress(staged=4), NEW_PROMPT, Wait),
        (Situation(BLUE, 5, NEWER_PROMPT, reverted=True), Progress(), NEW_PROMPT, Stage),
        (Situation(BLUE, 5, NEWER_PROMPT), Progress(staged=5), NEW_PROMPT, Stage),
        (Situation(BLUE, 5, NEW_PROMPT), Progress(staged=5), NEW_PROMPT, Compare),
        (Situation(BLUE, 5, NEW_PROMPT, compared=True), Progress(staged=5), NEW_PROMPT, Report),
    ],
    ids=[
        "alias unset",
        "move back to the live release",
        "verdict already written (a duplicate)",
        "no green: stage",
        "a plan runs: wait",
        "green takes traffic: wait",
        "someone else's green at 0%: wait",
        "someone else's green, reverted: stage over it",
        "the rule's own older candidate: superseded",
        "staged, not compared (a crash): compare",
        "compared, verdict not written: report",
    ],
)
def test_decide(
    situation: Situation, progress: Progress, target: Parts | None, expected: type
) -> None:
    assert isinstance(decide(progress, situation, target), expected)


def test_a_stage_says_which_green_it_supersedes() -> None:
    decision = decide(Progress(staged=5), Situation(BLUE, 5, NEWER_PROMPT), NEW_PROMPT)
    assert decision == Stage(NEW_PROMPT, supersedes=5)


def test_a_rule_needs_an_alias_people_move() -> None:
    with pytest.raises(InvalidInput, match="at least one alias"):
        make_rule("chat", [], "p")
    with pytest.raises(InvalidInput, match="at most one"):
        make_rule("chat", [PROMPT, Followed("prompt", "p", "other")], "p")
    for alias in ("chat-live", "chat-previous", "latest", "bad alias", ""):
        with pytest.raises(InvalidInput):
            make_rule("chat", [Followed("prompt", "p", alias)], "p")


def test_auto_promotion_goes_through_a_plan_with_live_analysis_never_forced() -> None:
    with pytest.raises(InvalidInput, match="auto_promote needs a plan"):
        make_rule("chat", [PROMPT], "p", auto_promote=True)
    straight = make_plan([100], 30.0, AnalysisSettings())
    with pytest.raises(InvalidInput, match="below 100"):
        make_rule("chat", [PROMPT], "p", auto_promote=True, plan=straight)
    with pytest.raises(InvalidInput, match="only used with auto_promote"):
        make_rule("chat", [PROMPT], "p", plan=PLAN)
    forced = make_plan([10, 100], 30.0, AnalysisSettings(), force=True)
    rule = make_rule("chat", [PROMPT], "p", auto_promote=True, plan=forced)
    assert rule.plan is not None and not rule.plan.force
    assert should_promote(rule, passed=True)
    assert not should_promote(rule, passed=False)
    assert not should_promote(make_rule("chat", [PROMPT], "p"), passed=True)


def test_rules_and_progress_survive_their_stored_form() -> None:
    rule = make_rule("chat", [PROMPT, MODEL], "golden", auto_promote=True, plan=PLAN)
    body = rule_json(rule, plan_json(rule.plan))
    assert rule_of("chat", body, plan_of(body["plan"])) == rule
    progress = Progress({PROMPT.uri: 2}, 5, NEW_PROMPT, {"action": "compared"}, 3, 10.0, 2)
    assert progress_of(progress_json(progress)) == progress
    assert progress_of(None) == Progress()


def test_a_rule_is_due_on_a_new_trigger_a_retry_or_a_changed_deployment() -> None:
    assert is_due(2, 1, Progress(), None, 0.0)
    assert not is_due(2, 2, Progress(), None, 0.0)
    assert not is_due(2, 2, Progress(retry_at=10.0), None, 9.0)
    assert is_due(2, 2, Progress(retry_at=10.0), None, 10.0)
    assert not is_due(2, 2, Progress(waiting_version=4), 4, 0.0)
    assert is_due(2, 2, Progress(waiting_version=4), 5, 0.0)


def test_retries_back_off_up_to_a_cap() -> None:
    assert [retry_delay(n, 30.0) for n in (1, 2, 3)] == [30.0, 60.0, 120.0]
    assert retry_delay(20, 30.0) == 600.0


def test_the_verdict_tag_comes_last_so_whoever_sees_it_sees_the_others() -> None:
    tags = verdict_tags("failed", "chat", blue=BLUE, run_id="r1", reasons=["worse"])
    assert list(tags)[-1] == "bgserve.verdict" and tags["bgserve.verdict"] == "failed"
    assert tags["bgserve.compared_with"] == "models:/m/1 + prompts:/p/1"
    assert tags["bgserve.comparison_run_id"] == "r1" and tags["bgserve.reasons"] == "worse"


def test_release_names_are_labels_naming_both_versions() -> None:
    assert release_name("chat", Parts("m", 12, "p", 3)) == "chat-m12-p3"
    long = release_name("a" * 63, Parts("m", 1, "p", 2))
    assert len(long) <= 63 and long.endswith("-m1-p2")
