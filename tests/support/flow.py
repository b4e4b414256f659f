"""Helpers for tests that run the whole stack: demo models, releases, OIP calls."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import httpx
from fastapi.testclient import TestClient

from bgserve.demo.models import push_demo_prompts, register_demo_models
from bgserve.settings import Settings

RELEASES = {
    "v1": ("summarizer-v1", "models:/summarizer/1", "prompts:/summarize/1"),
    "v2": ("summarizer-v2", "models:/summarizer/2", "prompts:/summarize/2"),
    "reworded": ("reworded", "models:/summarizer/1", "prompts:/summarize/2"),
}


def register_demo(tracking_uri: str) -> None:
    """Summarizer v1/v2 and prompt summarize v1/v2 in the test MLflow store."""
    assert register_demo_models(tracking_uri, tracking_uri) == (1, 2)
    assert push_demo_prompts(tracking_uri, tracking_uri) == (1, 2)


def create_releases(client: TestClient) -> dict[str, int]:
    """Register the three test releases; their ids by key."""
    ids = {}
    for key, (name, model, prompt) in RELEASES.items():
        response = client.post(
            "/releases", json={"name": name, "model_uri": model, "prompt_uri": prompt}
        )
        assert response.status_code == 201, response.text
        ids[key] = response.json()["id"]
    return ids


class Answer(Protocol):
    """What tests read of an HTTP answer: from httpx, or from the test client (which uses
    httpx2 when that is installed, as the openai SDK's dependencies do)."""

    @property
    def status_code(self) -> int: ...

    @property
    def text(self) -> str: ...

    @property
    def headers(self) -> Any: ...

    def json(self, **kwargs: Any) -> Any: ...


def ok(response: Answer, status: int = 200) -> Any:
    """The JSON body, after checking the status."""
    assert response.status_code == status, response.text
    return response.json()


def infer_body(text: str) -> dict[str, Any]:
    return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}


def shares(url: str, n: int) -> tuple[Counter[str], Counter[str]]:
    """Send ``n`` requests through the data plane; answers per slot and per release."""
    slots: Counter[str] = Counter()
    releases: Counter[str] = Counter()
    with httpx.Client(timeout=10) as http:
        for i in range(n):
            response = http.post(url, json=infer_body(f"Request number {i}. More text."))
            assert response.status_code == 200, response.text
            slots[response.headers["x-bgserve-slot"]] += 1
            releases[response.headers["x-bgserve-release"]] += 1
    return slots, releases


def make_settings(home: Path, mlflow_uri: str) -> Settings:
    """Settings for a test bgserve: its own home, free ports, short pauses."""
    return Settings(
        home=home,
        mlflow_tracking_uri=mlflow_uri,
        mlflow_registry_uri=mlflow_uri,
        data_port=0,
        plan_bake_s=0.3,
        # Steps bake for 0.3 s here and start at once; the initial delay and the warm-up
        # have tests of their own (tests/integration/test_plan_warmup.py).
        plan_initial_delay_s=0.0,
        plan_warmup_requests=0,
        compare_thresholds={"max_latency_ratio_p50": 10.0, "max_latency_ratio_p95": 10.0},
        plan_min_requests=5,
        # Test machines are loaded: only a gross slowdown should fail a test's plan.
        plan_max_latency_p95_ratio=20.0,
        engine_interval_seconds=0.05,
    )


def deploy(client: TestClient, name: str, blue: int, green: int | None = None) -> str:
    """Create a deployment (and stage green); return its data-plane URL."""
    body = ok(client.post("/deployments", json={"name": name, "release_id": blue}), 201)
    assert body["blue"]["weight"] == 100 and body["blue"]["ready"]
    if green is not None:
        staged = ok(client.post(f"/deployments/{name}/green", json={"release_id": green}))
        assert staged["phase"] == "staged" and staged["green"]["weight"] == 0
    url: str = body["data_plane_url"]
    return url


def poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``check`` every 50 ms until it returns something true; that value. Fails at
    the deadline naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what} not seen within {timeout}s")
