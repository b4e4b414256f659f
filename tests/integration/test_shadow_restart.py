"""Shadow traffic survives a restart of ``bgserve serve``: on the same state, mirroring
resumes with the same settings and the report so far, and goes on counting."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.flow import RELEASES, infer_body, ok, poll, register_demo
from tests.support.processes import start_serve

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def report(http: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = ok(http.get("/deployments/sr/shadow"))
    return body


def mirror(http: httpx.Client, count: int, start: int) -> None:
    url = ok(http.get("/deployments/sr"))["data_plane_url"]
    for n in range(start, start + count):
        response = httpx.post(url, json=infer_body(f"Request {n} is short. More."), timeout=30)
        assert response.status_code == 200, response.text


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def test_a_restart_resumes_mirroring_with_its_settings_and_report(
    mlflow_store: str, tmp_path: Path
) -> None:
    register_demo(mlflow_store)
    url, proc = start_serve(tmp_path, mlflow_store)
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            ids = {}
            for key in ("v1", "v2"):
                name, model, prompt = RELEASES[key]
                body = {"name": name, "model_uri": model, "prompt_uri": prompt}
                ids[key] = ok(http.post("/releases", json=body), 201)["id"]
            ok(http.post("/deployments", json={"name": "sr", "release_id": ids["v1"]}), 201)
            ok(http.post("/deployments/sr/green", json={"release_id": ids["v2"]}))
            checks = [{"type": "contains", "value": "Request"}]
            ok(http.put("/deployments/sr/shadow", json={"percent": 50, "assert": checks}))
            mirror(http, 40, 0)
            before = poll(
                lambda: (r := report(http))["pairs"] + r["dropped"] >= 20 and r, 60, "20 pairs"
            )
        stop(proc)

        url, proc = start_serve(tmp_path, mlflow_store)
        with httpx.Client(base_url=url, timeout=120) as http:
            resumed = report(http)
            assert resumed["percent"] == 50
            assert (resumed["blue"], resumed["green"]) == (ids["v1"], ids["v2"])
            for key in ("pairs", "dropped", "differing", "thresholds", "similarity"):
                assert resumed[key] == before[key], key
            assert (
                resumed["blue_side"]["assertions_total"] == before["blue_side"]["assertions_total"]
            )
            mirror(http, 20, 40)  # mirroring is on again: half of these are paired
            after = poll(
                lambda: (
                    (r := report(http))["pairs"] + r["dropped"]
                    >= before["pairs"] + before["dropped"] + 10
                    and r
                ),
                60,
                "10 more pairs after the restart",
            )
            assert after["percent"] == 50
            assert after["blue_side"]["assertions_total"] > before["blue_side"]["assertions_total"]
    finally:
        if proc.poll() is None:
            stop(proc)
