"""A golden set with a user-defined MLflow scorer and the pairwise judge (the test judge
server, over real HTTP) gating promotion of real slots on a real MLflow store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mlflow.genai.scorers import scorer

from bgserve.api.app import create_app
from tests.support.flow import create_releases, deploy, make_settings, ok, register_demo
from tests.unit.test_judge import JudgeServer

pytestmark = pytest.mark.integration


@scorer
def has_words(outputs: str) -> bool:
    """Every summary says something."""
    return len(outputs.split()) >= 3


@scorer
def fits_in_ten_words(outputs: str) -> bool:
    """A short-summary rule that the 12-word summarizer breaks on long texts."""
    return len(outputs.split()) <= 10


TEXTS = [
    "Ship the new release after two weeks of careful testing across every region today.",
    "The platform team moved every database to the new cluster over the long weekend.",
    "Our support queue shrank by half once the nightly batch jobs stopped timing out.",
    "Finance approved the budget for three more engineers on the payments team this year.",
    "The outage started when a certificate expired on the load balancer in front of search.",
    "Marketing wants the launch page translated into four languages before the next sprint.",
    "The new onboarding flow cut the time to first deploy from two days to three hours.",
    "Security asked every team to rotate their tokens and review who can read production.",
    "A slow query in the reporting service kept the dashboard from loading most mornings.",
    "The mobile app now caches the last feed so people can read it while offline too.",
]
CASES = [
    {"id": f"c{i}", "inputs": {"text": text}, "scorers": ["has_words"]}
    for i, text in enumerate(TEXTS)
]
# Blue and green summarize to different lengths: only the judge and scorers decide here.
LENIENT = {"min_mean_similarity": 0.0, "min_agreement_rate": 0.0, "max_output_tokens_ratio": 3.0}


@pytest.fixture(scope="module")
def judged(
    tmp_path_factory: pytest.TempPathFactory, mlflow_store: str
) -> Iterator[tuple[TestClient, JudgeServer]]:
    """A bgserve with the judge (longer answers win, asked both ways) and this module's
    scorers; ``rel`` releases registered."""
    register_demo(mlflow_store)
    with JudgeServer() as server:
        settings = make_settings(Path(tmp_path_factory.mktemp("judged")), mlflow_store)
        settings = settings.model_copy(
            update={
                "compare_judge_url": server.url,
                "compare_judge_model": "test-judge",
                "compare_judge_both_orders": True,
                "compare_scorer_modules": ["tests.integration.test_judge_flow"],
                # Configured server-side, so a pass on them needs no force to promote.
                "compare_thresholds": {**settings.compare.thresholds, **LENIENT},
            }
        )
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
            yield client, server


def test_a_green_the_judge_prefers_passes_the_gate(
    judged: tuple[TestClient, JudgeServer],
) -> None:
    client, server = judged
    rel = create_releases(client)
    deploy(client, "preferred", rel["v2"], rel["v1"])  # green keeps 12 words, blue 8
    report = ok(
        client.post("/deployments/preferred/compare", json={"cases": CASES, "thresholds": LENIENT})
    )
    assert report["verdict"] == {"passed": True, "reasons": []}
    judge = report["summary"]["judge"]
    assert (judge["wins"], judge["losses"], judge["judged"]) == (10, 0, 10)
    assert judge["model"] == "test-judge" and judge["both_orders"] is True
    assert len(server.requests) >= 20, "each case asked in both orders"
    (has_words_summary,) = report["summary"]["scorers"]
    assert has_words_summary["name"] == "has_words"
    assert has_words_summary["blue_mean"] == has_words_summary["green_mean"] == 1.0
    assert report["cases"][0]["green"]["scores"] == {"has_words": 1.0}
    assert report["mlflow"]["run_id"]
    promoted = ok(client.post("/deployments/preferred/promote", json={"weight": 10}))
    assert promoted["green"]["weight"] == 10


def test_a_green_the_judge_rejects_is_refused_with_win_rate_and_interval(
    judged: tuple[TestClient, JudgeServer],
) -> None:
    client, _ = judged
    rel = create_releases(client)
    deploy(client, "rejected", rel["v1"], rel["v2"])  # green cuts to 8 words
    report = ok(
        client.post("/deployments/rejected/compare", json={"cases": CASES, "thresholds": LENIENT})
    )
    (reason,) = report["verdict"]["reasons"]
    assert reason.startswith("the judge prefers blue: green wins 0, loses 10 and ties 0")
    assert "win rate 0.00 (0.00 to 0.28 at 95%)" in reason
    assert "below the minimum win rate 0.40" in reason
    refused = client.post("/deployments/rejected/promote", json={"weight": 10})
    assert refused.status_code == 409
    assert refused.json()["details"]["reasons"] == [reason]


def test_a_scorer_named_in_the_request_gates_and_unknown_ones_are_refused(
    judged: tuple[TestClient, JudgeServer],
) -> None:
    client, _ = judged
    rel = create_releases(client)
    deploy(client, "scored", rel["v2"], rel["v1"])
    body = {"cases": CASES, "thresholds": LENIENT, "scorers": ["fits_in_ten_words"]}
    report = ok(client.post("/deployments/scored/compare", json=body))
    (reason,) = report["verdict"]["reasons"]
    assert reason.startswith("green scores lower than blue on scorer 'fits_in_ten_words'")
    unknown = client.post("/deployments/scored/compare", json={"cases": CASES, "scorers": ["nope"]})
    assert unknown.status_code == 422
    assert unknown.json()["field"] == "scorers"
    assert "known are fits_in_ten_words, has_words" in unknown.json()["message"]
