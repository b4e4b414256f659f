"""Comparison, gate and prompt validation on real slot processes and a real MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bgserve.cli.app import app
from bgserve.demo.text_model import summarize
from tests.support.flow import deploy, ok

pytestmark = pytest.mark.integration

LONG = (
    "Ship the new release after two weeks of careful testing across every region, "
    "then tell the platform team about it. Nothing else."
)


def case(case_id: str, text: str, *asserts: dict[str, object]) -> dict[str, object]:
    return {"id": case_id, "inputs": {"text": text}, "assert": list(asserts)}


def test_identical_green_passes_and_report_is_fetchable(
    client: TestClient, rel: dict[str, int]
) -> None:
    deploy(client, "same", rel["v1"], rel["reworded"])
    report = ok(client.post("/deployments/same/compare", json={"golden_set": "summarize"}))
    assert report["verdict"] == {"passed": True, "reasons": []}
    assert report["summary"]["exact_matches"] == len(report["cases"]) == 8
    stored = ok(client.get("/deployments/same/comparison"))
    assert stored == report
    assert ok(client.get("/deployments/same"))["gate"]["passed"] is True


def test_assertion_failing_on_green_only_closes_the_gate(
    client: TestClient, rel: dict[str, int]
) -> None:
    deploy(client, "assert", rel["v1"], rel["v2"])
    v1, v2 = summarize(LONG, 12), summarize(LONG, 8)
    assert v1 != v2 and "careful" in v1 and "careful" not in v2
    cases = [
        case("short", "Ship it. Now."),
        case("long", LONG, {"type": "contains", "value": "careful"}),
    ]
    lenient = {"min_mean_similarity": 0.0, "min_agreement_rate": 0.0}
    report = ok(
        client.post("/deployments/assert/compare", json={"cases": cases, "thresholds": lenient})
    )
    assert not report["verdict"]["passed"]
    assert len(report["verdict"]["reasons"]) == 1
    assert "green fails assertions that blue passes in long" in report["verdict"]["reasons"][0]
    assert report["summary"]["regressed_cases"] == ["long"]
    refused = client.post("/deployments/assert/promote", json={"weight": 10})
    assert refused.status_code == 409
    assert refused.json()["details"]["reasons"] == report["verdict"]["reasons"]
    forced = ok(client.post("/deployments/assert/promote", json={"weight": 10, "force": True}))
    assert forced["green"]["weight"] == 10
    last = ok(client.get("/deployments/assert/history"))[-1]
    assert (last["action"], last["details"], last["principal"]) == (
        "shift",
        {"force": True},
        "anonymous",
    )


def test_missing_variable_and_unknown_assertion_are_named(
    client: TestClient, rel: dict[str, int]
) -> None:
    deploy(client, "strict", rel["v1"], rel["reworded"])
    before = ok(client.get("/deployments/strict"))["version"]
    missing = client.post(
        "/deployments/strict/compare",
        json={"cases": [case("fine", "Hello. There."), {"id": "c9", "inputs": {"txt": "typo"}}]},
    )
    assert missing.status_code == 422
    assert "case 'c9' lacks input 'text'" in missing.json()["message"]
    unknown = client.post(
        "/deployments/strict/compare",
        json={"cases": [case("odd", "Hi.", {"type": "startswith", "value": "H"})]},
    )
    assert unknown.status_code == 422
    assert "unknown assertion type 'startswith'" in unknown.json()["message"]
    assert ok(client.get("/deployments/strict"))["version"] == before


def test_prompt_validation_lints_and_compares_without_moving_traffic(
    client: TestClient, rel: dict[str, int]
) -> None:
    deploy(client, "prompted", rel["v1"])
    before = ok(client.get("/deployments/prompted"))
    reworded = ok(
        client.post(
            "/prompts/validate",
            json={
                "deployment": "prompted",
                "prompt_uri": "prompts:/summarize@latest",
                "golden_set": "summarize",
            },
        )
    )
    assert reworded["candidate"] == "prompts:/summarize/2"
    assert reworded["live_prompt_uri"] == "prompts:/summarize/1"
    assert reworded["report"]["verdict"]["passed"] and reworded["lint"]["errors"] == []

    broken = ok(
        client.post(
            "/prompts/validate",
            json={
                "deployment": "prompted",
                "template": "{{style}} summary. Text: {{text}}",
                "cases": [case("a", "One sentence. Two.")],
            },
        )
    )
    assert [e["variable"] for e in broken["lint"]["errors"]] == ["style"]
    assert broken["report"]["cases"][0]["green"]["error"].startswith("rendering failed")
    assert not broken["report"]["verdict"]["passed"]
    assert ok(client.get("/deployments/prompted")) == before


@pytest.mark.usefixtures("mlflow_store")
def test_prompts_push_registers_only_changes(tmp_path: Path) -> None:
    directory = tmp_path / "greeting"
    directory.mkdir()
    (directory / "template.txt").write_text("Say hello to {{name}}.")
    (directory / "prompt.yaml").write_text("commit_message: first\ntags:\n  team: x\n")
    runner = CliRunner(env={"MLFLOW_TRACKING_URI": os.environ["MLFLOW_TRACKING_URI"]})
    first = runner.invoke(app, ["prompts", "push", str(directory)])
    assert first.exit_code == 0 and "registered prompts:/greeting/1" in first.output
    again = runner.invoke(app, ["prompts", "push", str(directory)])
    assert again.exit_code == 0 and "nothing changed: prompts:/greeting/1" in again.output
    (directory / "template.txt").write_text("Say hello warmly to {{name}}.")
    changed = runner.invoke(app, ["prompts", "push", str(directory)])
    assert "registered prompts:/greeting/2" in changed.output


def test_a_judge_asked_for_but_not_configured_is_refused_before_any_call(
    client: TestClient, rel: dict[str, int]
) -> None:
    deploy(client, "nojudge", rel["v1"], rel["reworded"])
    before = ok(client.get("/deployments/nojudge"))["version"]
    refused = client.post(
        "/deployments/nojudge/compare", json={"golden_set": "summarize", "judge": True}
    )
    assert refused.status_code == 422
    assert refused.json()["field"] == "judge"
    assert "BGSERVE_COMPARE_JUDGE_URL" in refused.json()["message"]
    assert ok(client.get("/deployments/nojudge"))["version"] == before
