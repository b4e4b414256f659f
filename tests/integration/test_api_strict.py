"""Strict control-API bodies, bgserve's error shape everywhere, a JSON 500 with a request id,
the OpenAPI error responses, and stale comparisons marked as such."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bgserve.api.app import create_app
from tests.support.flow import create_releases, deploy, make_settings, ok
from tests.support.inprocess_api import build_in_process

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[TestClient]:
    from tests.support.flow import register_demo

    register_demo(mlflow_store)
    settings = make_settings(Path(tmp_path_factory.mktemp("strict")), mlflow_store)
    with TestClient(
        create_app(settings, build=build_in_process), base_url="http://127.0.0.1"
    ) as client:
        ids = create_releases(client)
        deploy(client, "strict", ids["v1"], ids["reworded"])
        client.app.state.ids = ids  # type: ignore[attr-defined]
        yield client


def green_weight(api: TestClient) -> int:
    weight: int = ok(api.get("/deployments/strict"))["green"]["weight"]
    return weight


def assert_bgserve_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    assert response.status_code == status, response.text
    assert "detail" not in body and body["error"] and body["message"], body
    if field is not None:
        assert body["field"] == field, body
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"weight": True}, "weight"),
        ({"weight": "50"}, "weight"),
        ({"weight": 50.0}, "weight"),
        ({"weight": 101}, "weight"),
        ({"weight": -1}, "weight"),
        ({"weight": 50, "force": "true"}, "force"),
        ({"weight": 50, "force": 1}, "force"),
    ],
)
def test_promote_takes_only_a_real_integer_weight_and_a_real_boolean(
    api: TestClient, body: dict[str, object], field: str
) -> None:
    response = api.post("/deployments/strict/promote", json=body)
    assert_bgserve_error(response, 422, field)
    assert green_weight(api) == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/deployments", {"name": "s2", "release_id": "1"}, "release_id"),
        ("/deployments", {"name": "s2", "release_id": True}, "release_id"),
        ("/deployments", {"name": 5, "release_id": 1}, "name"),
        ("/deployments/strict/green", {"release_id": 1.0}, "release_id"),
        ("/releases", {"name": "x", "model_uri": ["models:/m/1"], "prompt_uri": "p"}, "model_uri"),
        ("/deployments/strict/compare", {"golden_set": 1}, "golden_set"),
        (
            "/deployments/strict/compare",
            {"cases": [{"id": "c", "inputs": {"text": "x"}}], "thresholds": {"x": True}},
            "thresholds.x",
        ),
    ],
)
def test_every_body_is_strict(api: TestClient, path: str, body: object, field: str) -> None:
    assert_bgserve_error(api.post(path, json=body), 422, field)


@pytest.mark.parametrize(
    "raw",
    [b'{"weight": ', b"{'weight': 50}", b"\xff\xfe{}", b"[1, 2", b'{"weight": 50} trailing'],
)
def test_malformed_json_gets_the_json_error_shape_naming_the_body(
    api: TestClient, raw: bytes
) -> None:
    response = api.post(
        "/deployments/strict/promote", content=raw, headers={"content-type": "application/json"}
    )
    assert_bgserve_error(response, 422, "body")
    assert green_weight(api) == 0


def test_framework_errors_use_the_same_shape(api: TestClient) -> None:
    assert assert_bgserve_error(api.get("/no-such-thing"), 404)["error"] == "NotFound"
    wrong = api.get("/deployments/strict/promote")
    assert assert_bgserve_error(wrong, 405)["error"] == "MethodNotAllowed"
    assert "POST" in wrong.headers["allow"]


def test_an_unexpected_exception_is_a_json_500_with_a_request_id_logged_once(
    api: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    service = api.app.state.components.service  # type: ignore[attr-defined]

    def broken() -> list[object]:
        raise RuntimeError("db password is hunter2")

    monkeypatch.setattr(service, "list_deployments", broken)
    with caplog.at_level(logging.ERROR):
        response = api.get("/deployments")
    body = response.json()
    assert response.status_code == 500 and body["error"] == "InternalError"
    request_id = response.headers["x-request-id"]
    assert body["request_id"] == request_id and request_id in body["message"]
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and request_id in logged[0].getMessage()
    assert "hunter2" in caplog.text  # the operator sees the cause, with the traceback


def test_request_ids_are_echoed_when_safe_and_replaced_when_not(api: TestClient) -> None:
    assert api.get("/healthz", headers={"x-request-id": "ci-run.42"}).headers["x-request-id"] == (
        "ci-run.42"
    )
    for hostile in ("a" * 65, "x y", "<script>"):
        given = api.get("/healthz", headers={"x-request-id": hostile})
        replaced = given.headers["x-request-id"]
        assert replaced != hostile and len(replaced) == 32
    first, second = (api.get("/healthz").headers["x-request-id"] for _ in range(2))
    assert first != second


def test_openapi_lists_the_error_responses_with_the_error_model(api: TestClient) -> None:
    schema = ok(api.get("/openapi.json"))
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    error_model = schema["components"]["schemas"]["ErrorOut"]
    assert {"error", "message", "field", "details", "hint"} <= set(error_model["properties"])
    promote = schema["paths"]["/deployments/{name}/promote"]["post"]["responses"]
    assert {"401", "403", "404", "409", "413", "422", "503"} <= set(promote)
    for status in ("401", "409", "422", "503"):
        ref = promote[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorOut")
    reads = schema["paths"]["/deployments/{name}"]["get"]["responses"]
    assert {"401", "403", "404", "422"} <= set(reads)
    assert "bearer" in str(schema["components"]["securitySchemes"]).lower()


def test_a_comparison_of_another_pair_is_marked_stale(api: TestClient) -> None:
    ids = api.app.state.ids  # type: ignore[attr-defined]
    deploy(api, "stale", ids["v1"], ids["reworded"])
    cases = [{"id": "c1", "inputs": {"text": "One sentence. Two."}}]
    ok(api.post("/deployments/stale/compare", json={"cases": cases}))
    fresh = ok(api.get("/deployments/stale"))
    assert fresh["last_comparison"]["stale"] is False and fresh["gate"]["stale"] is False
    assert "cases" not in fresh["last_comparison"]
    moved = ok(api.post("/deployments/stale/green", json={"release_id": ids["v2"]}))
    assert moved["last_comparison"]["stale"] is True
    assert moved["gate"] is None or moved["gate"]["stale"] is True


def test_release_and_event_bodies_mirror_the_records(api: TestClient) -> None:
    ids = api.app.state.ids  # type: ignore[attr-defined]
    release = ok(api.get(f"/releases/{ids['reworded']}"))
    assert release["model_uri"] == "models:/summarizer/1"
    assert release["requested_prompt_uri"] == "prompts:/summarize/2"
    assert release["bundle_uri"].endswith(f"/{release['bundle_version']}")
    events = ok(api.get("/deployments/strict/history"))
    assert events[0]["action"] == "create" and events[0]["weights_after"] == {str(ids["v1"]): 100}
