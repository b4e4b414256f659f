"""Comparisons logged to the real MLflow store: the run, its params, metrics, table,
report and verdict tag; and a tracking server that is down costs nothing but a record."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from fastapi.testclient import TestClient

from bgserve.api.app import create_app
from tests.support.flow import create_releases, deploy, make_settings, ok, register_demo

pytestmark = pytest.mark.integration

CASES = [
    {
        "id": "long",
        "inputs": {
            "text": "Ship the new release after two weeks of careful testing across "
            "every region, then tell the platform team. Nothing else."
        },
        "assert": [{"type": "contains", "value": "careful"}],
    },
    {
        "id": "short",
        "inputs": {"text": "Ship it. Now."},
        "assert": [{"type": "contains", "value": "Ship"}],
    },
]
LENIENT = {"min_mean_similarity": 0.0, "min_agreement_rate": 0.0}


def test_a_comparison_is_a_run_with_params_metrics_table_report_and_verdict(
    client: TestClient, rel: dict[str, int], mlflow_store: str
) -> None:
    deploy(client, "logged", rel["v1"], rel["v2"])
    report = ok(
        client.post("/deployments/logged/compare", json={"cases": CASES, "thresholds": LENIENT})
    )
    assert report["outcome"] == "failed"  # green v2 cuts "careful" from the long case
    run_id = report["mlflow"]["run_id"]
    assert run_id and report["mlflow"]["error"] is None
    assert report["mlflow"]["experiment"] == "bgserve/logged"

    store = mlflow.MlflowClient(tracking_uri=mlflow_store)
    run = store.get_run(run_id)
    experiment = store.get_experiment(run.info.experiment_id)
    assert experiment.name == "bgserve/logged"
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["blue_release"] == str(rel["v1"]) and params["green_release"] == str(rel["v2"])
    assert params["blue_model_uri"] == "models:/summarizer/1"
    assert params["green_model_uri"] == "models:/summarizer/2"
    assert params["green_prompt_uri"] == "prompts:/summarize/2"
    assert params["golden_set"] == "inline" and len(params["golden_set_sha256"]) == 64
    assert params["threshold.min_mean_similarity"] == "0.0"
    metrics = run.data.metrics
    assert metrics["blue_assertion_pass_rate"] == 1.0
    assert metrics["green_assertion_pass_rate"] == 0.5
    assert metrics["similarity_mean"] == pytest.approx(report["summary"]["mean_similarity"])
    assert {"similarity_p10", "blue_latency_p50_ms", "green_latency_p95_ms"} <= set(metrics)
    assert run.data.tags["verdict"] == "failed"

    artifacts = {a.path for a in store.list_artifacts(run_id)}
    assert {"comparison_cases.json", "report.html"} <= artifacts
    table = store.load_table(run.info.experiment_id, "comparison_cases.json", run_ids=[run_id])
    assert list(table["case_id"]) == ["long", "short"]
    long_row = table[table["case_id"] == "long"].iloc[0]
    assert "careful" in long_row["blue_output"] and "careful" not in long_row["green_output"]
    html = Path(store.download_artifacts(run_id, "report.html")).read_text()
    assert run_id in html and "FAILED" in html

    event = ok(client.get("/deployments/logged/history"))[-1]
    assert event["action"] == "compare"
    assert event["details"]["mlflow_run_id"] == run_id


def test_a_prompt_validation_is_a_run_of_the_live_model_with_both_prompts(
    client: TestClient, rel: dict[str, int], mlflow_store: str
) -> None:
    deploy(client, "validated", rel["v1"])
    body = {
        "deployment": "validated",
        "prompt_uri": "prompts:/summarize/2",
        "cases": CASES,
        "thresholds": LENIENT,
    }
    validation = ok(client.post("/prompts/validate", json=body))
    logged = validation["report"]["mlflow"]
    assert logged["error"] is None and logged["experiment"] == "bgserve/validated"

    run = mlflow.MlflowClient(tracking_uri=mlflow_store).get_run(logged["run_id"])
    params = run.data.params
    assert run.info.run_name.startswith("prompt-validation")
    assert params["blue_model_uri"] == params["green_model_uri"] == "models:/summarizer/1"
    assert params["blue_prompt_uri"] == "prompts:/summarize/1"
    assert params["green_prompt_uri"] == "prompts:/summarize/2"
    assert params["golden_set"] == "inline"
    assert run.data.tags["verdict"] == validation["report"]["outcome"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def unlogged(
    tmp_path: Path, mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """A bgserve whose comparisons go to a tracking server that is down."""
    register_demo(mlflow_store)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings = make_settings(tmp_path, mlflow_store).model_copy(
        update={
            "compare_mlflow_tracking_uri": f"http://127.0.0.1:{_closed_port()}",
            "compare_mlflow_timeout_seconds": 10.0,
        }
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as app:
        yield app


def test_with_the_tracking_server_down_the_compare_answers_and_records_it(
    unlogged: TestClient,
) -> None:
    rel = create_releases(unlogged)
    deploy(unlogged, "unlogged", rel["v1"], rel["reworded"])
    report = ok(unlogged.post("/deployments/unlogged/compare", json={"cases": CASES}))
    assert report["verdict"]["passed"] is True, "logging never changes the verdict"
    assert report["mlflow"]["run_id"] is None
    assert report["mlflow"]["error"]
    event = ok(unlogged.get("/deployments/unlogged/history"))[-1]
    assert event["action"] == "compare"
    assert event["details"]["mlflow_error"] == report["mlflow"]["error"]
    assert ok(unlogged.get("/deployments/unlogged"))["gate"]["passed"] is True
    scrape = unlogged.get("/metrics").text
    assert "bgserve_comparison_log_failures_total 1.0" in scrape
