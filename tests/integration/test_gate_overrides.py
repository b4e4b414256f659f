"""Per-call thresholds: a pass on looser limits than the server's opens the gate only to a
forced step, and the history says which limits the call changed. Real slots, real MLflow."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from bgserve.errors import InvalidInput
from bgserve.evaluation.verdict import LOOSER_WHEN, Thresholds
from tests.support.flow import deploy, ok

pytestmark = pytest.mark.integration

# Every quality limit at its most permissive: blue v1 and green v2 summarize differently.
LOOSE = {
    "min_mean_similarity": 0.0,
    "min_agreement_rate": 0.0,
    "max_assertion_regression": 1.0,
    "max_latency_ratio_p50": 1e9,
    "max_latency_ratio_p95": 1e9,
    "max_output_tokens_ratio": 1e9,
}


def compare(client: TestClient, name: str, thresholds: dict[str, float] | None) -> Any:
    body: dict[str, Any] = {"golden_set": "summarize"}
    if thresholds is not None:
        body["thresholds"] = thresholds
    return ok(client.post(f"/deployments/{name}/compare", json=body))


def last_compare_event(client: TestClient, name: str) -> dict[str, Any]:
    events = ok(client.get(f"/deployments/{name}/history"))
    event: dict[str, Any] = [e for e in events if e["action"] == "compare"][-1]
    return event


def test_a_pass_on_loosened_thresholds_needs_force_and_is_recorded(
    client: TestClient, rel: dict[str, int]
) -> None:
    deploy(client, "loosened", rel["v1"], rel["v2"])
    assert not compare(client, "loosened", None)["verdict"]["passed"]

    report = compare(client, "loosened", LOOSE)

    assert report["verdict"]["passed"], report["verdict"]
    event = last_compare_event(client, "loosened")
    assert event["details"]["threshold_overrides"] == LOOSE
    loosened = event["details"]["loosened_thresholds"]
    assert loosened["min_mean_similarity"] == {"used": 0.0, "configured": 0.9}
    assert loosened["max_latency_ratio_p50"] == {"used": 1e9, "configured": 10.0}
    assert "looser than the server's" in event["reason"] and "force" in event["reason"]
    gate = ok(client.get("/deployments/loosened"))["gate"]
    assert gate["passed"] and {t["name"] for t in gate["loosened"]} == set(loosened)

    for body in ({"weight": 10}, {}):
        refused = client.post("/deployments/loosened/promote", json=body)
        assert refused.status_code == 409, refused.text
        answer = refused.json()
        assert answer["hint"] == "force"
        assert "min_mean_similarity 0 (configured: 0.9)" in answer["message"]
        assert "BGSERVE_COMPARE_THRESHOLDS" in answer["message"]
        assert answer["details"]["loosened_thresholds"] == loosened
    assert ok(client.get("/deployments/loosened"))["green"]["weight"] == 0

    forced = ok(client.post("/deployments/loosened/promote", json={"weight": 10, "force": True}))
    assert forced["green"]["weight"] == 10


def test_tightened_or_unchanged_thresholds_need_no_force(
    client: TestClient, rel: dict[str, int]
) -> None:
    deploy(client, "tightened", rel["v1"], rel["reworded"])  # same answers on both sides
    stricter = {"min_mean_similarity": 0.99, "min_agreement_rate": 0.95}
    same = {"max_latency_ratio_p95": 10.0}  # what the server has configured

    assert compare(client, "tightened", {**stricter, **same})["verdict"]["passed"]

    event = last_compare_event(client, "tightened")
    assert event["details"]["threshold_overrides"] == {**stricter, **same}
    assert event["details"]["loosened_thresholds"] == {}
    assert ok(client.get("/deployments/tightened"))["gate"]["loosened"] == []
    moved = ok(client.post("/deployments/tightened/promote", json={"weight": 10}))
    assert moved["green"]["weight"] == 10


def test_every_threshold_knows_which_way_is_looser() -> None:
    assert set(LOOSER_WHEN) == set(Thresholds.model_fields)
    base = Thresholds()
    for name, way in LOOSER_WHEN.items():
        value = getattr(base, name)
        looser = value + 0.05 if way == "higher" else value - 0.05
        tighter = value - 0.05 if way == "higher" else value + 0.05
        for moved, expected in ((looser, {name: (looser, value)}), (tighter, {})):
            try:
                candidate = base.with_overrides({name: moved})
            except InvalidInput:  # out of the limit's range that way
                continue
            assert candidate.loosened_from(base) == expected, name
