"""Twenty operators at once on one deployment: each call succeeds or gets a 409 saying why,
and the history is the exact sequence of successful changes (no lost update)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.flow import Answer, deploy, ok

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OPERATORS = 20


def weights(body: dict[str, Any]) -> dict[str, int]:
    slots = [body["blue"], body["green"], body["standby"]]
    return {str(s["release"]["id"]): s["weight"] for s in slots if s is not None}


def test_twenty_operators_at_once_lose_no_update(client: TestClient, rel: dict[str, int]) -> None:
    deploy(client, "race", rel["v1"], rel["reworded"])
    ok(client.post("/deployments/race/compare", json={"golden_set": "summarize"}))
    start = threading.Barrier(OPERATORS)
    calls = (
        [("promote", {"weight": w}) for w in (10, 20, 30, 40, 50, 60, 70, 80)]
        + [("promote", {}), ("promote", {})]
        + [("revert", {})] * 5
        + [("green", {"release_id": r}) for r in (rel["v2"], rel["reworded"], rel["v2"])]
        + [("promote", {"weight": 100, "force": True})] * 2
    )

    def call(op: tuple[str, dict[str, Any]]) -> Answer:
        start.wait(30)
        response: Answer = client.post(f"/deployments/race/{op[0]}", json=op[1])
        return response

    with ThreadPoolExecutor(OPERATORS) as pool:
        answers = list(pool.map(call, calls))

    statuses = sorted(a.status_code for a in answers)
    allowed = (200, 202, 409)  # 202: a plan stored, the rollout engine runs it
    assert set(statuses) <= set(allowed), [a.text for a in answers if a.status_code not in allowed]
    assert all(a.json()["message"] for a in answers if a.status_code == 409)
    ok(client.post("/deployments/race/revert", json={}))  # stops a plan the race started
    history = ok(client.get("/deployments/race/history"))
    final = ok(client.get("/deployments/race"))
    print(
        f"\n{OPERATORS} operators: {statuses.count(200) + statuses.count(202)} succeeded, "
        f"{statuses.count(409)} got 409"
    )
    # Version v was written by the v-th event: every success is in the history as it answered.
    assert len(history) == final["version"]
    for answer in (a.json() for a in answers if a.status_code in (200, 202)):
        assert history[answer["version"] - 1]["weights_after"] == weights(answer)
    assert history[-1]["weights_after"] == weights(final)
