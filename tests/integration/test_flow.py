"""The whole blue-green flow through the control API: real MLflow, real slot processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bgserve.api.app import create_app
from bgserve.demo.traffic import TrafficClient
from bgserve.registry.mlflow_registry import MlflowRegistry
from tests.support.flow import create_releases, deploy, make_settings, ok, poll, shares

pytestmark = pytest.mark.integration


def test_weight_30_sends_30_percent_to_green(client: TestClient, rel: dict[str, int]) -> None:
    url = deploy(client, "share", rel["v1"], rel["reworded"])
    report = ok(client.post("/deployments/share/compare", json={"golden_set": "summarize"}))
    assert report["verdict"]["passed"], report["verdict"]
    body = ok(client.post("/deployments/share/promote", json={"weight": 30}))
    assert (body["blue"]["weight"], body["green"]["weight"], body["phase"]) == (70, 30, "shifting")
    slots, releases = shares(url, 400)
    assert abs(slots["green"] / 400 - 0.30) <= 0.07
    assert releases[str(rel["reworded"])] == slots["green"]
    assert releases[str(rel["v1"])] == slots["blue"]


def aliases(client: TestClient, deployment: str) -> dict[str, dict[str, int | None]]:
    settings = client.app.state.components.settings  # type: ignore[attr-defined]
    registry = MlflowRegistry(settings.mlflow_tracking_uri, settings.mlflow_registry_uri)
    model = registry.alias_versions(
        deployment,
        model_name="summarizer",
        prompt_name="summarize",
        bundle_name="bgserve.summarizer-v2",
    )
    old_bundle = registry.alias_versions(
        deployment,
        model_name="summarizer",
        prompt_name="summarize",
        bundle_name="bgserve.summarizer-v1",
    )["bundle"]
    return {**model, "old_bundle": old_bundle}


def test_gate_then_forced_promotion_and_revert_lose_no_request(
    client: TestClient, rel: dict[str, int]
) -> None:
    url = deploy(client, "flow", rel["v1"], rel["v2"])
    refused = client.post("/deployments/flow/promote", json={})
    assert refused.status_code == 409 and "no comparison" in refused.json()["message"]
    report = ok(client.post("/deployments/flow/compare", json={"golden_set": "summarize"}))
    assert not report["verdict"]["passed"]
    assert report["summary"]["differing_cases"] == ["medium", "long", "list-like"]
    refused = client.post("/deployments/flow/promote", json={"weight": 10})
    assert refused.status_code == 409
    assert "long" in refused.json()["message"] and refused.json()["details"]["reasons"]

    with TrafficClient(url, {"text": "Keep calling. While the weights move."}, pause=0.002) as t:
        started = ok(client.post("/deployments/flow/promote", json={"force": True}), 202)
        assert started["phase"] == "promoting" and started["green"]["weight"] == 10

        def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = ok(client.get("/deployments/flow"))
            return body if body["phase"] == "stable" else None

        promoted = poll(finished, 60, "the plan to finish")
        mid = t.snapshot()
        reverted = ok(client.post("/deployments/flow/revert", json={}))
        counts = t.stop()
    assert counts.failures == [] and mid.per_slot["green"] > 0 and counts.total > 100
    assert promoted["blue"]["release"]["id"] == rel["v2"] and promoted["green"] is None
    assert promoted["standby"]["release"]["id"] == rel["v1"]
    assert reverted["blue"]["release"]["id"] == rel["v1"] and reverted["phase"] == "reverted"

    history = [e for e in ok(client.get("/deployments/flow/history")) if e["action"] != "analysis"]
    actions = [e["action"] for e in history]
    assert actions == ["create", "stage", "compare", "shift", "shift", "promote", "revert"]
    assert history[3]["details"]["force"] is True and history[3]["principal"] == "anonymous"
    assert [e["principal"] for e in history[4:6]] == ["bgserve", "bgserve"]
    assert history[5]["weights_after"] == {str(rel["v2"]): 100, str(rel["v1"]): 0}


def test_aliases_follow_cutover_and_revert(client: TestClient, rel: dict[str, int]) -> None:
    deploy(client, "alias", rel["v1"], rel["v2"])
    ok(client.post("/deployments/alias/promote", json={"weight": 100, "force": True}))
    after = aliases(client, "alias")
    assert after["model"] == {"live": 2, "previous": 1}
    assert after["prompt"] == {"live": 2, "previous": 1}
    assert after["bundle"]["live"] is not None and after["old_bundle"]["previous"] is not None
    assert after["old_bundle"]["live"] is None
    ok(client.post("/deployments/alias/revert", json={}))
    back = aliases(client, "alias")
    assert back["model"] == {"live": 1, "previous": 2}
    assert back["prompt"] == {"live": 1, "previous": 2}
    assert back["old_bundle"]["live"] is not None and back["bundle"]["live"] is None


def test_bad_input_gets_4xx_naming_the_problem_and_changes_nothing(
    client: TestClient, rel: dict[str, int]
) -> None:
    deploy(client, "lonely", rel["v1"])
    before = (ok(client.get("/releases")), ok(client.get("/deployments")))
    cases = [
        (
            client.post(
                "/releases",
                json={
                    "name": "x",
                    "model_uri": "models:/summarizer/99",
                    "prompt_uri": "prompts:/summarize/1",
                },
            ),
            404,
            "99",
        ),
        (
            client.post(
                "/releases",
                json={
                    "name": "x",
                    "model_uri": "summarizer/1",
                    "prompt_uri": "prompts:/summarize/1",
                },
            ),
            422,
            "model_uri",
        ),
        (
            client.post(
                "/releases",
                json={
                    "name": "x",
                    "model_uri": "models:/summarizer/1",
                    "prompt_uri": "prompts:/nope@live",
                },
            ),
            404,
            "nope",
        ),
        (
            client.post("/deployments", json={"name": "Bad_Name", "release_id": rel["v1"]}),
            422,
            "DNS-1123",
        ),
        (client.post("/deployments/lonely/promote", json={"weight": 10}), 409, "no green"),
        (client.post("/deployments/ghost/revert", json={}), 404, "ghost"),
        (client.post("/deployments/lonely/promote", json={"weight": 120}), 422, "weight"),
        (client.post("/deployments", json={"name": "y", "release_id": 999}), 404, "999"),
    ]
    for response, status, needle in cases:
        assert response.status_code == status, response.text
        assert needle in response.json()["message"], response.json()
    assert (ok(client.get("/releases")), ok(client.get("/deployments"))) == before


def test_restart_resumes_same_deployments_and_weights(
    tmp_path: Path, mlflow_store: str, client: TestClient, rel: dict[str, int]
) -> None:
    settings = make_settings(tmp_path, mlflow_store)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as first:
        ids = create_releases(first)
        deploy(first, "resume", ids["v1"], ids["v2"])
        ok(first.post("/deployments/resume/promote", json={"weight": 40, "force": True}))
        before = ok(first.get("/deployments/resume"))
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as second:
        after = ok(second.get("/deployments/resume"))
        assert after["version"] == before["version"]
        for role in ("blue", "green"):
            assert after[role]["release"]["id"] == before[role]["release"]["id"]
            assert after[role]["weight"] == before[role]["weight"]
            assert after[role]["ready"]
        slots, _ = shares(after["data_plane_url"], 100)
        assert slots["green"] == 40


def test_metrics_show_weights_and_requests_per_slot(
    client: TestClient, rel: dict[str, int]
) -> None:
    url = deploy(client, "metered", rel["v1"], rel["reworded"])
    ok(client.post("/deployments/metered/promote", json={"weight": 50, "force": True}))
    shares(url, 10)
    text = client.get("/metrics").text
    blue, green = rel["v1"], rel["reworded"]
    assert (
        f'bgserve_slot_weight{{deployment="metered",release="{green}",slot="green"}} 50.0' in text
    )
    assert (
        f'bgserve_requests_total{{deployment="metered",release="{blue}",slot="blue"}} 5.0' in text
    )
    assert (
        f'bgserve_requests_total{{deployment="metered",release="{green}",slot="green"}} 5.0' in text
    )
