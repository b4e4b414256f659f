"""The Databricks backend's loopback adapter calls Databricks with bgserve's identity: it
answers only bgserve's own calls, to the entity routes it handed out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bgserve.cloud.databricks.adapter import SECRET_HEADER, InvocationAdapter

ENTITY = "/serving-endpoints/bgserve-chat/served-models/release-2/invocations"
OIP = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}


class Workspace:
    """Records what reaches the SDK's ApiClient, and answers as an MLflow entity."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.api_client = self

    def do(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.calls.append((method, path, body))
        return {"predictions": ["HI"]}


@pytest.fixture
def adapter() -> Iterator[tuple[InvocationAdapter, Workspace]]:
    workspace = Workspace()
    adapter = InvocationAdapter(workspace)
    try:
        yield adapter, workspace
    finally:
        adapter.close()


def test_bgserves_call_reaches_the_entity_as_a_dataframe_split(
    adapter: tuple[InvocationAdapter, Workspace],
) -> None:
    proxy, workspace = adapter
    url = proxy.url_for(ENTITY)
    answer = httpx.post(url, json=OIP, headers={SECRET_HEADER: proxy.secret})
    assert answer.status_code == 200
    assert answer.json()["outputs"][0]["data"] == ["HI"]
    split = {"dataframe_split": {"columns": ["text"], "data": [["hi"]]}}
    assert workspace.calls == [("POST", ENTITY, split)]


@pytest.mark.parametrize(
    ("path", "secret", "status"),
    [
        (ENTITY, None, 401),
        (ENTITY, "guessed", 401),
        ("/serving-endpoints/someone-elses/invocations", "right", 404),
        (ENTITY + "/../../../api/2.0/token/create", "right", 404),
        ("/entity/serving-endpoints/bgserve-chat/invocations", "right", 404),
    ],
)
def test_any_other_call_is_refused_and_reaches_nothing(
    adapter: tuple[InvocationAdapter, Workspace], path: str, secret: str | None, status: int
) -> None:
    proxy, workspace = adapter
    base = proxy.url_for(ENTITY).split("/entity/")[0]
    headers = (
        {} if secret is None else {SECRET_HEADER: proxy.secret if secret == "right" else secret}
    )
    target = base + (path if path.startswith("/entity/") else "/entity" + path)
    answer = httpx.post(target, json=OIP, headers=headers)
    assert answer.status_code == status
    assert workspace.calls == []
