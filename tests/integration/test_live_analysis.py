"""Live analysis on real slots and a real router: a green that fails one request in five,
or answers three times slower, is reverted on its own at its first bake."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bgserve.demo.models import register_flaky_model, register_variant
from bgserve.demo.run import LIVE_TEXTS
from bgserve.demo.traffic import TrafficClient
from tests.support.flow import deploy, ok

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BAKE_S = 2.0


@pytest.fixture(scope="module")
def app_settings() -> dict[str, Any]:
    """What this module's ``app`` (tests/conftest.py) changes."""
    return {"engine_interval_seconds": 0.05}


def release(app: TestClient, name: str, model_version: int, model: str = "summarizer") -> int:
    body = {
        "name": name,
        "model_uri": f"models:/{model}/{model_version}",
        "prompt_uri": "prompts:/summarize/1",
    }
    return int(ok(app.post("/releases", json=body), 201)["id"])


def run_plan_until_reverted(
    app: TestClient, name: str, blue: int, green: int
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Promote green under live traffic (one input in five is long); the auto-revert event,
    the plan as it started, and what the clients saw."""
    url = deploy(app, name, blue, green)
    plan = {
        "steps": [10, 50, 100],
        "bake_s": BAKE_S,
        "analysis": {"min_requests": 20, "max_latency_p95_ratio": 1.5},
    }
    inputs = [{"text": text} for text in LIVE_TEXTS]
    with TrafficClient(url, inputs, pause=0.002) as traffic:
        time.sleep(0.5)  # blue's latency is known before green takes traffic
        started = ok(
            app.post(f"/deployments/{name}/promote", json={"plan": plan, "force": True}), 202
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if ok(app.get(f"/deployments/{name}"))["plan"] is None:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # requests in flight at the revert come back
        counts = traffic.stop()
    history = ok(app.get(f"/deployments/{name}/history"))
    return history[-1], started, counts


def test_a_green_failing_one_request_in_five_is_reverted_at_its_first_bake(
    app: TestClient, mlflow_store: str
) -> None:
    blue = release(app, "live-v1", 1)
    # Other models' names, so the shared MLflow store's summarizer keeps its two versions.
    flaky = register_flaky_model(mlflow_store, mlflow_store, model_name="summarizer-flaky")
    green = release(app, "live-flaky", flaky, model="summarizer-flaky")
    event, started, counts = run_plan_until_reverted(app, "flaky", blue, green)
    assert (event["action"], event["principal"]) == ("auto-revert", "bgserve")
    step_started = datetime.fromisoformat(started["plan"]["bake_until"]).timestamp() - BAKE_S
    took = datetime.fromisoformat(event["at"]).timestamp() - step_started
    error_rate = event["details"]["analysis"]["checks"][0]
    print(f"\nflaky green reverted {took:.2f}s after its step began: {error_rate['reason']}")
    assert took <= BAKE_S + 1.0
    assert event["details"]["analysis"]["step"] == 10
    assert error_rate["name"] == "error_rate" and error_rate["outcome"] == "fail"
    assert error_rate["green_errors"] > 0 and error_rate["blue_errors"] == 0
    assert error_rate["p_value"] < 0.05 and "error_rate" in event["reason"]
    assert event["weights_after"] == {str(blue): 100, str(green): 0}
    # The clients' only failures are the ones green itself answered.
    assert set(counts.failed_by_release) == {str(green)}
    assert counts.per_release[str(blue)] > 0


def test_a_green_three_times_slower_at_p95_is_reverted_at_its_first_bake(
    app: TestClient, mlflow_store: str
) -> None:
    config = {"max_words": 12, "delay_ms": 40}
    slow = register_variant(mlflow_store, mlflow_store, "v1-slow", config, "summarizer-slow")
    blue = release(app, "speed-v1", 1)
    green = release(app, "speed-slow", slow, model="summarizer-slow")
    event, _, counts = run_plan_until_reverted(app, "slow", blue, green)
    assert (event["action"], event["principal"]) == ("auto-revert", "bgserve")
    checks = {c["name"]: c for c in event["details"]["analysis"]["checks"]}
    print(f"\nslow green reverted: {checks['latency_p95']['reason']}")
    assert checks["latency_p95"]["outcome"] == "fail" and checks["latency_p95"]["ratio"] > 1.5
    assert checks["error_rate"]["outcome"] == "pass"
    assert counts.failures == []
