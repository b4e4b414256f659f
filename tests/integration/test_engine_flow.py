"""The rollout engine on real slots and a real router: plans run in the background,
bake, are analysed against blue, and move on, hold or revert on their own."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bgserve.demo.traffic import TrafficClient
from tests.support.flow import deploy, ok, poll

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app_settings() -> dict[str, Any]:
    """What this module's ``app`` (tests/conftest.py) changes."""
    return {"plan_bake_s": 1.0, "plan_min_requests": 10, "engine_interval_seconds": 0.1}


@pytest.fixture(scope="module")
def ids(app: TestClient) -> dict[str, int]:
    ids: dict[str, int] = app.app.state.ids  # type: ignore[attr-defined]
    return ids


def test_a_healthy_green_goes_10_50_100_without_another_call(
    app: TestClient, ids: dict[str, int]
) -> None:
    url = deploy(app, "eng", ids["v1"], ids["reworded"])
    with TrafficClient(url, {"text": "Keep calling. While it bakes."}, pause=0.005) as traffic:
        started = ok(app.post("/deployments/eng/promote", json={"force": True}), 202)
        assert started["phase"] == "promoting" and started["green"]["weight"] == 10
        assert started["plan"]["steps"] == [10, 50, 100] and started["plan"]["bake_until"]

        def cut_over() -> dict[str, Any] | None:
            body: dict[str, Any] = ok(app.get("/deployments/eng"))
            return body if body["phase"] == "stable" else None

        done = poll(cut_over, 30, "the cutover")
        counts = traffic.snapshot()
    assert done["blue"]["release"]["id"] == ids["reworded"] and done["plan"] is None
    assert counts.failures == []
    history = ok(app.get("/deployments/eng/history"))
    automatic = [e for e in history if e["principal"] == "bgserve"]
    moves = [e for e in automatic if e["action"] in ("shift", "promote")]
    assert [e["weights_after"][str(ids["reworded"])] for e in moves] == [50, 100]
    assert all(e["details"]["analysis"]["outcome"] == "pass" for e in moves)
    assert {e["action"] for e in automatic} <= {"shift", "promote", "analysis"}


def test_too_little_traffic_holds_says_why_and_an_operator_resumes(
    app: TestClient, ids: dict[str, int]
) -> None:
    deploy(app, "quiet", ids["v1"], ids["reworded"])
    plan = {"steps": [50, 100], "bake_s": 0.3, "analysis": {"max_bake_s": 0.8}}
    ok(app.post("/deployments/quiet/promote", json={"plan": plan, "force": True}), 202)

    def held() -> dict[str, Any] | None:
        body: dict[str, Any] = ok(app.get("/deployments/quiet"))
        return body if body["phase"] == "held" else None

    body = poll(held, 10, "the hold")
    assert "too few requests (blue 0, green 0; 10 each needed)" in body["plan"]["held"]
    assert body["green"]["weight"] == 50
    resumed = ok(app.post("/deployments/quiet/promote", json={}), 202)
    assert resumed["phase"] == "stable" and resumed["blue"]["release"]["id"] == ids["reworded"]


def test_revert_aborts_a_running_plan(app: TestClient, ids: dict[str, int]) -> None:
    deploy(app, "abort", ids["v1"], ids["reworded"])
    plan = {"steps": [20, 100], "bake_s": 30}
    ok(app.post("/deployments/abort/promote", json={"plan": plan, "force": True}), 202)
    reverted = ok(app.post("/deployments/abort/revert", json={}))
    assert reverted["plan"] is None and reverted["green"]["weight"] == 0
    time.sleep(0.3)
    assert ok(app.get("/deployments/abort"))["green"]["weight"] == 0


def test_bad_plans_are_422_naming_the_field(app: TestClient, ids: dict[str, int]) -> None:
    deploy(app, "badplan", ids["v1"], ids["reworded"])
    for plan, field in [
        ({"steps": [50, 10, 100]}, "plan.steps"),
        ({"steps": [10, 50]}, "plan.steps"),
        ({"bake_s": "30"}, "plan.bake_s"),
        ({"analysis": {"on_inconclusive": "shrug"}}, "plan.analysis.on_inconclusive"),
        ({"analysis": {"max_bake_s": 1}, "bake_s": 5}, "plan.analysis.max_bake_s"),
    ]:
        response = app.post("/deployments/badplan/promote", json={"plan": plan, "force": True})
        assert response.status_code == 422, (plan, response.text)
        assert response.json()["field"] == field, (plan, response.json())
    both = app.post("/deployments/badplan/promote", json={"weight": 10, "plan": {}})
    assert both.status_code == 422 and both.json()["field"] == "plan"
