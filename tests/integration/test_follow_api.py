"""The follow routes and the webhook endpoint as callers meet them, with tokens configured:
who may set a rule, which rules are refused, and a webhook that needs no bearer token but
MLflow's signature (slots kept as records: nothing is compared here)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bgserve.api.app import create_app
from bgserve.app.follow_webhook import sign
from tests.support.flow import Answer, create_releases, make_settings, ok, register_demo
from tests.support.inprocess_api import build_in_process

pytestmark = pytest.mark.integration

SECRET = "api-test-secret-0123456789"
DEPLOYER, VIEWER = "deployer-token-1", "viewer-token-1"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[TestClient]:
    register_demo(mlflow_store)
    settings = make_settings(Path(tmp_path_factory.mktemp("follow-api")), mlflow_store)
    settings = settings.model_copy(
        update={
            "auth_tokens": f"deployer:{DEPLOYER},viewer:{VIEWER}",
            "follow_webhook_secret": SECRET,
            "follow_poll_seconds": 0,
        }
    )
    app = create_app(settings, build=build_in_process)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        client.headers["authorization"] = f"Bearer {DEPLOYER}"
        ids = create_releases(client)
        ok(client.post("/deployments", json={"name": "chat", "release_id": ids["v1"]}), 201)
        yield client


def deliver(
    api: TestClient, delivery_id: str, data: dict[str, str], secret: str = SECRET
) -> Answer:
    """Post a delivery as MLflow sends it: signed headers, no bearer token."""
    body = json.dumps({"entity": "prompt_alias", "action": "created", "data": data})
    stamp = str(int(time.time()))
    headers = {
        "content-type": "application/json",
        "authorization": "",
        "x-mlflow-delivery-id": delivery_id,
        "x-mlflow-timestamp": stamp,
        "x-mlflow-signature": sign(secret, delivery_id, stamp, body.encode()),
    }
    return api.post("/follow/webhook", content=body, headers=headers)


def test_setting_a_rule_needs_a_deployer_and_reading_it_a_viewer(api: TestClient) -> None:
    body = {"prompt_alias": "candidate"}
    anonymous = {"authorization": ""}
    assert api.put("/deployments/chat/follow", json=body, headers=anonymous).status_code == 401
    viewer = {"authorization": f"Bearer {VIEWER}"}
    assert api.put("/deployments/chat/follow", json=body, headers=viewer).status_code == 403
    rule = ok(api.put("/deployments/chat/follow", json=body))
    assert rule["follows"] == ["prompts:/summarize@candidate"] and not rule["auto_promote"]
    assert ok(api.get("/deployments/chat/follow", headers=viewer))["golden_set"] == "summarize"
    assert [r["deployment"] for r in ok(api.get("/follow", headers=viewer))] == ["chat"]
    follows = [e for e in ok(api.get("/deployments/chat/history")) if e["action"] == "follow"]
    assert follows and follows[-1]["principal"].startswith("deployer")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "prompt_alias"),
        ({"prompt_alias": "chat-live"}, 422, "prompt_alias"),
        ({"model_alias": "latest"}, 422, "model_alias"),
        ({"prompt_alias": "c", "plan": {"steps": [10, 100]}}, 422, "plan"),
        ({"prompt_alias": "c", "auto_promote": True, "plan": {"steps": [100]}}, 422, "plan.steps"),
        ({"prompt_alias": "c", "golden_set": "no-such-set"}, 404, None),
        ({"prompt_alias": "c", "prompt_name": "summarizer", "golden_set": "summarize"}, 404, None),
        ({"prompt_alias": "c", "shadow_percent": 101}, 422, "shadow_percent"),
    ],
    ids=[
        "no alias",
        "an alias bgserve moves itself",
        "latest",
        "a plan without auto_promote",
        "a plan straight to 100",
        "no such golden set",
        "a model named as the prompt",
        "shadow over 100",
    ],
)
def test_a_rule_that_cannot_work_is_refused_and_names_why(
    api: TestClient, body: dict[str, object], status: int, field: str | None
) -> None:
    answer = api.put("/deployments/chat/follow", json=body)
    assert answer.status_code == status, answer.text
    if field is not None:
        assert answer.json()["field"] == field


def test_the_webhook_needs_no_token_but_mlflows_signature(api: TestClient) -> None:
    ok(api.put("/deployments/chat/follow", json={"prompt_alias": "candidate"}))
    data = {"name": "summarize", "alias": "candidate", "version": "2"}
    accepted = deliver(api, "api-1", data)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {
        "delivery_id": "api-1",
        "event": "prompt_alias.created",
        "deployments": ["chat"],
    }
    other = {"name": "summarize", "alias": "someone-elses", "version": "2"}
    unrelated = deliver(api, "api-2", other)
    assert unrelated.status_code == 202 and unrelated.json()["deployments"] == []
    forged = deliver(api, "api-3", data, secret="x" * 20)
    assert forged.status_code == 401 and "x-mlflow-signature" in forged.json()["message"]
    replayed = deliver(api, "api-1", data)
    assert replayed.status_code == 409
    assert ok(api.get("/deployments/chat/follow"))["last_event"]["delivery_id"] == "api-1"


def test_stopping_is_idempotent(api: TestClient) -> None:
    ok(api.put("/deployments/chat/follow", json={"model_alias": "candidate"}))
    assert ok(api.delete("/deployments/chat/follow"))["removed"] is True
    assert ok(api.delete("/deployments/chat/follow"))["removed"] is False
    assert api.get("/deployments/chat/follow").status_code == 404
    assert api.delete("/deployments/nope/follow").status_code == 404
