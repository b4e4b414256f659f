"""Pages of ``GET /deployments`` and ``GET /deployments/{name}/history``: ``limit`` and an
opaque ``cursor`` that stays right while items are appended, the whole list as before when
neither is given, and the CLI still showing everything. A real store and MLflow registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import bgserve.cli.client as cli_client
from bgserve.api.app import create_app
from bgserve.api.paging import DEFAULT_LIMIT, MAX_LIMIT
from bgserve.cli.app import app as cli
from tests.support.flow import create_releases, make_settings, ok, register_demo
from tests.support.inprocess_api import build_in_process

pytestmark = pytest.mark.integration

SHIFTS = 221  # with the create event, a history of 222


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str) -> Iterator[TestClient]:
    register_demo(mlflow_store)
    settings = make_settings(Path(tmp_path_factory.mktemp("paging")), mlflow_store)
    with TestClient(
        create_app(settings, build=build_in_process), base_url="http://127.0.0.1"
    ) as client:
        ids = create_releases(client)
        for name in ("d-a", "d-c", "d-e", "d-g", "d-i"):
            ok(client.post("/deployments", json={"name": name, "release_id": ids["v1"]}), 201)
        ok(client.post("/deployments/d-a/green", json={"release_id": ids["reworded"]}))
        for i in range(SHIFTS):
            shift(client, "d-a", 1 + i % 99)
        client.app.state.ids = ids  # type: ignore[attr-defined]
        yield client


def shift(client: TestClient, name: str, weight: int) -> None:
    ok(client.post(f"/deployments/{name}/promote", json={"weight": weight, "force": True}))


def pages(client: TestClient, path: str, limit: int) -> Iterator[dict[str, Any]]:
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        page = ok(client.get(path, params=params))
        yield page
        cursor = page["next_cursor"]
        if cursor is None:
            return


def test_without_paging_the_whole_history_comes_as_before(api: TestClient) -> None:
    events = ok(api.get("/deployments/d-a/history"))
    assert isinstance(events, list) and len(events) == SHIFTS + 2  # create, stage, shifts


def test_history_pages_add_up_to_the_whole_history(api: TestClient) -> None:
    whole = ok(api.get("/deployments/d-a/history"))
    got = list(pages(api, "/deployments/d-a/history", 7))
    assert all(len(p["items"]) == 7 for p in got[:-1]) and 1 <= len(got[-1]["items"]) <= 7
    assert [e for p in got for e in p["items"]] == whole


def test_a_cursor_holds_while_events_are_appended(api: TestClient) -> None:
    first = ok(api.get("/deployments/d-a/history", params={"limit": 50}))
    seen = [e["id"] for e in first["items"]]
    shift(api, "d-a", 7)
    shift(api, "d-a", 8)
    cursor = first["next_cursor"]
    while cursor:
        page = ok(api.get("/deployments/d-a/history", params={"limit": 50, "cursor": cursor}))
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
    assert seen == [e["id"] for e in ok(api.get("/deployments/d-a/history"))]
    assert len(seen) == len(set(seen)) == SHIFTS + 4


def test_deployment_pages_skip_nothing_when_one_is_created_between_pages(
    api: TestClient,
) -> None:
    before = [d["name"] for d in ok(api.get("/deployments"))]
    first = ok(api.get("/deployments", params={"limit": 2}))
    assert [d["name"] for d in first["items"]] == before[:2]
    ids = api.app.state.ids  # type: ignore[attr-defined]
    ok(api.post("/deployments", json={"name": "d-b", "release_id": ids["v1"]}), 201)  # earlier
    ok(api.post("/deployments", json={"name": "d-h", "release_id": ids["v1"]}), 201)  # later
    names = [d["name"] for d in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = ok(api.get("/deployments", params={"limit": 2, "cursor": cursor}))
        names += [d["name"] for d in page["items"]]
        cursor = page["next_cursor"]
    assert names == sorted({*before, "d-h"})


def test_a_cursor_alone_gets_a_page_of_the_default_size(api: TestClient) -> None:
    first = ok(api.get("/deployments/d-a/history", params={"limit": 1}))
    page = ok(api.get("/deployments/d-a/history", params={"cursor": first["next_cursor"]}))
    assert len(page["items"]) == DEFAULT_LIMIT and page["next_cursor"]
    assert page["items"][0]["id"] > first["items"][0]["id"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/deployments", {"limit": 0}, "limit"),
        ("/deployments", {"limit": MAX_LIMIT + 1}, "limit"),
        ("/deployments/d-a/history", {"limit": "ten"}, "limit"),
        ("/deployments", {"cursor": "not-a-cursor"}, "cursor"),
        ("/deployments/d-a/history", {"cursor": "eyJ4IjoxfQ"}, "cursor"),  # {"x":1}
    ],
)
def test_bad_paging_is_a_422_naming_the_parameter(
    api: TestClient, path: str, params: dict[str, Any], field: str
) -> None:
    response = api.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


def test_a_cursor_of_one_list_is_refused_by_the_other(api: TestClient) -> None:
    history = ok(api.get("/deployments/d-a/history", params={"limit": 1}))["next_cursor"]
    deployments = ok(api.get("/deployments", params={"limit": 1}))["next_cursor"]
    assert api.get("/deployments", params={"cursor": history}).status_code == 422
    refused = api.get("/deployments/d-a/history", params={"cursor": deployments})
    assert refused.status_code == 422 and refused.json()["field"] == "cursor"


def test_the_cli_pages_through_everything(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def through_api(method: str, url: str, **kwargs: Any) -> Any:
        asked.append(url)
        kwargs.pop("timeout", None)
        request: Any = api.request  # the test client's own httpx flavour
        return request(method, url.split(":8080", 1)[1], **kwargs)

    monkeypatch.setattr(cli_client, "PAGE_SIZE", 9)
    monkeypatch.setattr(httpx, "request", through_api)
    runner = CliRunner()

    history = runner.invoke(cli, ["history", "d-a", "--json"])
    status = runner.invoke(cli, ["status", "--json"])

    assert history.exit_code == 0 and status.exit_code == 0, history.output + status.output
    whole = ok(api.get("/deployments/d-a/history"))
    assert json.loads(history.output) == whole and len(whole) > 9
    names = [d["name"] for d in json.loads(status.output)]
    assert names == [d["name"] for d in ok(api.get("/deployments"))]
    assert sum("/history?" in u for u in asked) == -(-len(whole) // 9)  # one call a page
