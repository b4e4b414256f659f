"""Hostile input: oversized bodies (chunked too), bad names and URIs, templates, huge ids."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bgserve.api.app import create_app
from bgserve.evaluation.template import render
from tests.support.flow import make_settings
from tests.support.inprocess_api import build_in_process

pytestmark = pytest.mark.integration

LIMIT = 4096


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[TestClient]:
    settings = make_settings(Path(tmp_path_factory.mktemp("hostile")), mlflow_store)
    settings.max_body_bytes = LIMIT
    with TestClient(
        create_app(settings, build=build_in_process), base_url="http://127.0.0.1"
    ) as client:
        yield client


def release(name: str, model: str = "models:/m/1", prompt: str = "prompts:/p/1") -> dict[str, str]:
    return {"name": name, "model_uri": model, "prompt_uri": prompt}


def test_bodies_over_the_limit_get_413_declared_or_chunked(small: TestClient) -> None:
    big = b'{"name": "' + b"a" * LIMIT + b'"}'
    declared = small.post("/releases", content=big, headers={"content-type": "application/json"})
    chunked = small.post(
        "/releases",
        content=iter([big[:3000], big[3000:]]),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in chunked.request.headers
    for response in (declared, chunked):
        assert response.status_code == 413 and "BGSERVE_MAX_BODY_BYTES" in response.text
    json_body = {"content-type": "application/json"}
    fine = small.post("/releases", content=iter([b'{"name": "a"}']), headers=json_body)
    assert fine.status_code == 422  # under the limit: parsed, then refused for what it says


@pytest.mark.parametrize("name", ["Bad_Name", "a" * 64, "../etc", "-x", "x-", "ünï", "a.b", ""])
def test_names_must_be_dns_1123_labels(small: TestClient, name: str) -> None:
    response = small.post("/releases", json=release(name))
    assert response.status_code == 422 and response.json()["field"] == "name"


@pytest.mark.parametrize(
    ("field", "uri"),
    [
        ("model_uri", "runs:/0123/model"),
        ("model_uri", "file:///etc/passwd"),
        ("model_uri", "http://evil.example/m/1"),
        ("model_uri", "models:/../../etc/1"),
        ("model_uri", "models:/m/1; rm -rf /"),
        ("model_uri", "prompts:/p/1"),
        ("prompt_uri", "models:/m/1"),
        ("prompt_uri", "prompts:/p/99999999999"),
    ],
)
def test_uris_are_models_or_prompts_only(small: TestClient, field: str, uri: str) -> None:
    response = small.post("/releases", json={**release("ok"), field: uri})
    assert response.status_code == 422 and response.json()["field"] == field


@pytest.mark.parametrize(
    "path",
    ["/releases/99999999999999999999", "/releases/0", "/deployments/" + "a" * 300],
)
def test_out_of_range_path_parameters_are_422(small: TestClient, path: str) -> None:
    assert small.get(path).status_code == 422


def test_huge_ids_in_bodies_are_422(small: TestClient) -> None:
    for body in ({"name": "x", "release_id": 2**63}, {"name": "x", "release_id": 2**31}):
        assert small.post("/deployments", json=body).status_code == 422


def test_templates_substitute_text_and_never_evaluate() -> None:
    hostile = {"text": "{{ secret }} {% include '/etc/passwd' %} ${HOME} __import__('os')"}
    rendered = render("Q: {{ text }} {{text.__class__}} {% include '/etc/passwd' %}", hostile)
    assert rendered == (
        "Q: {{ secret }} {% include '/etc/passwd' %} ${HOME} __import__('os') "
        "{{text.__class__}} {% include '/etc/passwd' %}"
    )
    assert "root:" not in rendered


def test_golden_set_limits_and_names(small: TestClient) -> None:
    case = {"id": "c", "inputs": {"text": "x" * 70_000}}
    settings = small.app.state.components.settings  # type: ignore[attr-defined]
    settings_limit = settings.max_body_bytes
    settings.max_body_bytes = 8 * 1024 * 1024
    try:
        too_big = small.post("/deployments/nope/compare", json={"cases": [case]})
        many = [{"id": f"c{i}", "inputs": {"text": "x"}} for i in range(10_001)]
        too_many = small.post("/deployments/nope/compare", json={"cases": many})
    finally:
        settings.max_body_bytes = settings_limit
    assert too_big.status_code == 413 and too_many.status_code == 413
    escape = small.post("/deployments/nope/compare", json={"golden_set": "../../etc/passwd"})
    assert escape.status_code == 422 and escape.json()["field"] == "golden_set"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"cases": ' + b"[" * 1900 + b"]" * 1900 + b"}",  # deeper than the JSON parser goes
        b'{"golden_set": "\\ud800"}',  # a lone surrogate
        b'{"golden_set": "a", "golden_set": "b", "cases": null}',  # duplicate keys
        b"\x00" * 100,
        b"",
    ],
)
def test_hostile_bodies_get_a_json_4xx_never_a_500(small: TestClient, raw: bytes) -> None:
    response = small.post(
        "/deployments/nope/compare", content=raw, headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert body["error"] and body["message"] and "detail" not in body
    assert response.headers["x-request-id"]


def test_a_refused_oversized_body_still_carries_a_request_id(small: TestClient) -> None:
    json_body = {"content-type": "application/json"}
    response = small.post("/releases", content=b"x" * (LIMIT + 1), headers=json_body)
    assert response.status_code == 413 and response.json()["error"] == "PayloadTooLarge"
    assert len(response.headers["x-request-id"]) == 32
