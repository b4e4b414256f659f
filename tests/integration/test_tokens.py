"""Output tokens: reported usage or the documented approximation, the gate, the cost."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from bgserve.app.slot_calls import reported_tokens
from bgserve.demo.models import register_variant
from bgserve.evaluation.comparison import SlotResult, Thresholds, compare
from bgserve.evaluation.golden import GoldenCase
from bgserve.evaluation.tokens import approximate_tokens
from tests.support.flow import deploy, ok

CASES = [GoldenCase(id=f"c{i}", inputs={}) for i in range(5)]
SHORT = "Ship the release on Friday."
VERBOSE = "Ship the release on Friday, after the tests pass and the team agrees."


def _side(text: str, tokens: int | None = None) -> dict[str, SlotResult]:
    return {c.id: SlotResult(output=text, latency_ms=1.0, output_tokens=tokens) for c in CASES}


LOOSE = Thresholds(min_mean_similarity=0.0, min_agreement_rate=0.0)


def test_a_verbose_green_is_refused_by_the_token_gate() -> None:
    assert approximate_tokens(VERBOSE) >= 2 * approximate_tokens(SHORT)
    report = compare(CASES, _side(SHORT), _side(VERBOSE), LOOSE)
    assert report.summary.tokens is not None and report.summary.tokens.approximate
    (reason,) = report.verdict.reasons
    assert reason.startswith("green's answers are 2.57 times as long as blue's")
    assert "(approximate counts), above the limit of 1.50" in reason
    looser = LOOSE.model_copy(update={"max_output_tokens_ratio": 3.0})
    assert compare(CASES, _side(SHORT), _side(VERBOSE), looser).verdict.passed


def test_reported_usage_wins_over_the_approximation_and_prices_a_request() -> None:
    report = compare(CASES, _side(SHORT, 100), _side(SHORT, 120), LOOSE, price_per_1k_tokens=2.0)
    tokens = report.summary.tokens
    assert tokens is not None and not tokens.approximate
    assert [tokens.blue_mean, tokens.green_mean, tokens.ratio] == pytest.approx([100, 120, 1.2])
    assert tokens.green_cost_per_request == pytest.approx(0.24)
    assert report.verdict.passed


def test_usage_is_read_from_an_oip_answer() -> None:
    tensor = {
        "outputs": [{"name": "output", "data": ["x"]}, {"name": "output_tokens", "data": [7]}]
    }
    assert reported_tokens(tensor) == 7
    usage = {"outputs": [], "parameters": {"usage": {"completion_tokens": 9}}}
    assert reported_tokens(usage) == 9
    assert reported_tokens({"outputs": [{"name": "output", "data": ["x"]}]}) is None
    assert reported_tokens({"parameters": {"usage": {"completion_tokens": True}}}) is None


LONG_TEXTS = [
    "Ship the new release after two weeks of careful testing across every region and then "
    "tell the platform team and the support desk about every change it brings today.",
    "The platform team moved every database to the new cluster over the long weekend while "
    "the rest of the company kept working on the old one without noticing anything odd.",
    "Our support queue shrank by half once the nightly batch jobs stopped timing out and the "
    "reports finally arrived before the first shift started answering customer questions.",
]


@pytest.mark.integration
def test_a_verbose_green_on_real_slots_is_refused_by_the_token_gate(
    client: TestClient, rel: dict[str, int], mlflow_store: str
) -> None:
    version = register_variant(mlflow_store, mlflow_store, "verbose-16", {"max_words": 16})
    verbose = ok(
        client.post(
            "/releases",
            json={
                "name": "verbose",
                "model_uri": f"models:/summarizer/{version}",
                "prompt_uri": "prompts:/summarize/1",
            },
        ),
        201,
    )
    deploy(client, "wordy", rel["v2"], verbose["id"])  # 8 words against 16
    cases = [{"id": f"c{i}", "inputs": {"text": t}} for i, t in enumerate(LONG_TEXTS)]
    lenient = {"min_mean_similarity": 0.0, "min_agreement_rate": 0.0}
    report = ok(
        client.post("/deployments/wordy/compare", json={"cases": cases, "thresholds": lenient})
    )
    tokens = report["summary"]["tokens"]
    assert tokens["ratio"] >= 1.8 and tokens["approximate"] is True
    (reason,) = report["verdict"]["reasons"]
    assert reason.startswith("green's answers are") and "above the limit of 1.50" in reason
    assert client.post("/deployments/wordy/promote", json={"weight": 10}).status_code == 409
