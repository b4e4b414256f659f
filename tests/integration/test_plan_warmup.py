"""Green's warm-up on real slot processes: before a plan's first step green answers the
last comparison's inputs directly, the data plane counts none of them, and only then does
green take its first share; durations a plan cannot represent are refused."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from bgserve.api.plan_schemas import PlanOut
from bgserve.demo.traffic import TrafficClient
from bgserve.domain.analysis import AnalysisSettings
from bgserve.domain.plan import Plan
from tests.support.flow import deploy, ok, poll

WARMUP = 15


@pytest.fixture(scope="module")
def app_settings() -> dict[str, Any]:
    """What this module's ``app`` (tests/conftest.py) changes."""
    return {
        "plan_warmup_requests": WARMUP,
        "plan_bake_s": 30.0,
        "engine_interval_seconds": 0.05,
    }


@pytest.fixture(scope="module")
def ids(app: TestClient) -> dict[str, int]:
    ids: dict[str, int] = app.app.state.ids  # type: ignore[attr-defined]
    return ids


def green_requests(app: TestClient, name: str, release_id: int) -> int:
    backend = app.app.state.components.backend  # type: ignore[attr-defined]
    window = backend.windows(name).get(release_id)
    return 0 if window is None else int(window.requests)


def test_green_answers_the_warm_up_directly_before_its_first_step(
    app: TestClient, ids: dict[str, int]
) -> None:
    deploy(app, "warm", ids["v1"], ids["reworded"])
    app.post("/deployments/warm/compare", json={"golden_set": "summarize"})
    started = ok(app.post("/deployments/warm/promote", json={"force": True}), 202)
    assert started["plan"]["warming_up"] is True and started["green"]["weight"] == 0

    def first_step() -> dict[str, Any] | None:
        body: dict[str, Any] = ok(app.get("/deployments/warm"))
        return body if body["green"]["weight"] == 10 else None

    stepped = poll(first_step, 30, "the first step after the warm-up")
    assert stepped["plan"]["warming_up"] is False
    shift = [e for e in ok(app.get("/deployments/warm/history")) if e["action"] == "shift"][-1]
    warmup = shift["details"]["warmup"]
    assert (warmup["requests"], warmup["sent"], warmup["failed"]) == (WARMUP, WARMUP, 0)
    assert warmup["timed_out"] is False
    # Sent to the slot, not through the data plane: no live count saw them.
    assert green_requests(app, "warm", ids["reworded"]) == 0
    ok(app.post("/deployments/warm/revert", json={}))


def test_a_plan_with_nothing_to_warm_with_says_so_and_goes_on(
    app: TestClient, ids: dict[str, int]
) -> None:
    deploy(app, "cold", ids["v1"], ids["reworded"])  # never compared: no inputs
    ok(app.post("/deployments/cold/promote", json={"force": True}), 202)

    def first_step() -> dict[str, Any] | None:
        body: dict[str, Any] = ok(app.get("/deployments/cold"))
        return body if body["green"]["weight"] == 10 else None

    poll(first_step, 30, "the first step without a warm-up")
    shift = [e for e in ok(app.get("/deployments/cold/history")) if e["action"] == "shift"][-1]
    assert "never compared" in shift["details"]["warmup"]["skipped"]
    ok(app.post("/deployments/cold/revert", json={}))


def test_a_plan_can_turn_the_warm_up_off(app: TestClient, ids: dict[str, int]) -> None:
    deploy(app, "nowarm", ids["v1"], ids["reworded"])
    body = {"plan": {"warmup": {"requests": 0}}, "force": True}
    started = ok(app.post("/deployments/nowarm/promote", json=body), 202)
    assert started["green"]["weight"] == 10 and started["plan"]["warming_up"] is False
    ok(app.post("/deployments/nowarm/revert", json={}))


@pytest.mark.parametrize(
    ("plan", "field"),
    [
        ({"bake_s": 1e12}, "plan.bake_s"),
        ({"analysis": {"max_bake_s": 1e12}}, "plan.analysis.max_bake_s"),
        ({"analysis": {"initial_delay_s": 1e9}}, "plan.analysis.initial_delay_s"),
        ({"analysis": {"min_latency_delta_ms": -1}}, "plan.analysis.min_latency_delta_ms"),
        ({"warmup": {"timeout_s": 1e12}}, "plan.warmup.timeout_s"),
        ({"warmup": {"requests": 10**6}}, "plan.warmup.requests"),
    ],
)
def test_durations_beyond_30_days_are_422_and_listings_stay_whole(
    app: TestClient, ids: dict[str, int], plan: dict[str, Any], field: str
) -> None:
    if app.get("/deployments/huge").status_code == 404:
        deploy(app, "huge", ids["v1"], ids["reworded"])
    response = app.post("/deployments/huge/promote", json={"plan": plan, "force": True})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert ok(app.get("/deployments/huge"))["plan"] is None
    assert app.get("/deployments").status_code == 200
    assert app.get("/ui").status_code == 200


def test_a_stored_plan_from_before_the_cap_does_not_break_its_view() -> None:
    # Plans stored by older releases may hold any bake; showing one must not fail.
    plan = Plan((10, 100), 1e12, AnalysisSettings(), step_started_at=1000.0)
    shown = PlanOut.of(plan)
    assert shown is not None and shown.bake_until is None and shown.bake_s == 1e12


def test_a_baseline_plan_runs_a_fresh_copy_of_blue_beside_green_on_real_slots(
    app: TestClient, ids: dict[str, int]
) -> None:
    url = deploy(app, "kayenta", ids["v1"], ids["reworded"])
    app.post("/deployments/kayenta/compare", json={"golden_set": "summarize"})
    plan = {"steps": [25, 100], "bake_s": 1.0, "compare_with": "baseline"}
    with TrafficClient(url, {"text": "Keep calling. Three ways."}, pause=0.005) as traffic:
        body = {"plan": plan, "force": True}
        started = ok(app.post("/deployments/kayenta/promote", json=body), 202)
        baseline = started["plan"]["baseline_release"]
        assert baseline not in (ids["v1"], ids["reworded"])

        def three_ways() -> dict[str, Any] | None:
            body: dict[str, Any] = ok(app.get("/deployments/kayenta"))
            return body if body["green"] and body["green"]["weight"] == 25 else None

        poll(three_ways, 60, "the first step with its baseline")
        backend = app.app.state.components.backend  # type: ignore[attr-defined]
        assert backend.slot_info("kayenta", baseline).ready

        def cut_over() -> dict[str, Any] | None:
            body: dict[str, Any] = ok(app.get("/deployments/kayenta"))
            return body if body["phase"] == "stable" else None

        done = poll(cut_over, 60, "the cutover")
        counts = traffic.stop()
    assert done["blue"]["release"]["id"] == ids["reworded"]
    assert counts.failures == []
    assert str(baseline) in counts.per_release  # the baseline answered live requests
    # Retired right after the cutover is stored (a follow-up of the same step).
    poll(lambda: backend.slot_info("kayenta", baseline) is None, 30, "the baseline retired")
    history = ok(app.get("/deployments/kayenta/history"))
    assert "follow-up-failed" not in [e["action"] for e in history]
    step = [e for e in history if e["action"] == "shift"][-1]
    assert step["weights_after"][str(baseline)] == 25
    assert step["details"]["warmup"]["baseline"]["sent"] == WARMUP
    promoted = [e for e in history if e["action"] == "promote"][-1]
    assert promoted["details"]["analysis"]["outcome"] == "pass"
