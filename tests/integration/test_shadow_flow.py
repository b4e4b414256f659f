"""Shadow traffic on real slots: live requests mirrored to green, every client answered by
blue, the pairs scored against what each slot answers directly, and the gate they drive."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.flow import deploy, infer_body, ok, poll

pytestmark = pytest.mark.integration

REQUESTS = 200


def text_of(i: int) -> str:
    # Version 2 keeps 8 words of the first sentence, version 1 keeps 12: they differ
    # exactly on the inputs whose first sentence is longer than 8 words, every fourth one.
    if i % 4 == 0:
        return f"Request {i} asks how the green release answers compared with blue. Then more."
    return f"Request {i} is short. It has a second sentence."


def answer(http: httpx.Client, url: str, text: str) -> str:
    body = ok(http.post(url, json=infer_body(text)))
    return str(body["outputs"][0]["data"][0])


def slot_url(client: TestClient, name: str, role: str) -> str:
    slot = ok(client.get(f"/deployments/{name}"))[role]
    return f"{slot['endpoint']}/v2/models/{name}/infer"


def test_mirrored_pairs_report_exactly_the_inputs_whose_answers_differ(
    client: TestClient, rel: dict[str, int]
) -> None:
    url = deploy(client, "shadowed", rel["v1"], rel["v2"])
    started = ok(client.put("/deployments/shadowed/shadow", json={"percent": 100}))
    assert started["percent"] == 100 and started["pairs"] == 0
    with httpx.Client(timeout=10) as http:
        for i in range(REQUESTS):
            response = http.post(url, json=infer_body(text_of(i)))
            assert response.status_code == 200, response.text
            assert response.headers["x-bgserve-slot"] == "blue"
        blue, green = slot_url(client, "shadowed", "blue"), slot_url(client, "shadowed", "green")
        differs = {
            text_of(i)
            for i in range(REQUESTS)
            if answer(http, blue, text_of(i)) != answer(http, green, text_of(i))
        }
    assert differs == {text_of(i) for i in range(0, REQUESTS, 4)}

    def settled() -> dict[str, Any] | None:
        report: dict[str, Any] = ok(client.get("/deployments/shadowed/shadow"))
        return report if report["pairs"] + report["dropped"] >= REQUESTS else None

    report = poll(settled, 60, "every mirrored request paired or dropped")
    assert report["green_errors"] == 0
    if report["dropped"] == 0:
        assert report["differing"] == len(differs)
    else:
        assert report["differing"] <= len(differs) <= report["differing"] + report["dropped"]
    assert all(pair["inputs"]["text"] in differs for pair in report["worst"])
    assert all(pair["blue"] != pair["green"] for pair in report["worst"])
    if report["pairs"] >= 50:  # enough pairs: the failing report closes the gate
        assert not report["verdict"]["passed"]
        refused = client.post("/deployments/shadowed/promote", json={"weight": 10})
        assert refused.status_code == 409 and refused.json()["hint"] == "force"
        assert "shadow comparison" in refused.json()["message"]
    ok(client.delete("/deployments/shadowed/shadow"))
    ok(client.post("/deployments/shadowed/green", json={"release_id": rel["reworded"]}))
    poll(
        lambda: (
            client.get("/deployments/shadowed/shadow").status_code == 404
            or ok(client.get("/deployments/shadowed/shadow"))["green"] == rel["v2"]
        ),
        10,
        "the report of the old pair dropped",
    )
