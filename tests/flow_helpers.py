"""Helpers for tests that run the whole stack: demo models, releases, OIP calls."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
from fastapi.testclient import TestClient

from bgserve.demo.models import push_demo_prompts, register_demo_models

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


def ok(response: httpx.Response, status: int = 200) -> Any:
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
