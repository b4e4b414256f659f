"""``bgserve render`` on Databricks: the serving endpoint's JSON as the REST API takes it,
read back by the SDK's own dataclasses and checked by the stand-in's validator (the SDK's
request types), then created on the stand-in as it is."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from bgserve.cli.app import app
from tests.support.databricks import DatabricksStandIn
from tests.support.databricks_rest import request_problems
from tests.support.stored import stored_deployment

ENV = {"BGSERVE_BACKEND": "databricks", "BGSERVE_DATABRICKS_WORKLOAD_SIZE": "Medium"}


def test_render_prints_the_endpoint_the_rest_api_takes(tmp_path: Path) -> None:
    from databricks.sdk.service.serving import EndpointCoreConfigInput

    url = stored_deployment(tmp_path, ("chat-model", 3))
    env = {**ENV, "BGSERVE_HOME": str(tmp_path)}
    result = CliRunner().invoke(app, ["render", "-d", "chat", "--state-url", url], env=env)
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert request_problems("create", body) == []
    config = EndpointCoreConfigInput.from_dict(body["config"])
    assert config.as_dict() == body["config"]  # nothing the SDK's type does not know
    (entity,) = body["config"]["served_entities"]
    assert body["name"] == body["config"]["name"] == "bgserve-chat"
    assert (entity["name"], entity["workload_size"]) == ("release-1", "Medium")
    assert body["config"]["traffic_config"] == {
        "routes": [{"served_entity_name": "release-1", "traffic_percentage": 100}]
    }
    assert body["tags"] == [{"key": "managed-by", "value": "bgserve"}]
    api = DatabricksStandIn()
    status, _, created = api.answer(
        "POST",
        "https://ws/api/2.0/serving-endpoints",
        {"authorization": f"Bearer {api.token}"},
        result.output.encode(),
    )
    assert status == 200, created


def test_render_writes_one_file_and_refuses_a_mirror(tmp_path: Path) -> None:
    url = stored_deployment(tmp_path, ("chat-model", 3))
    env = {**ENV, "BGSERVE_HOME": str(tmp_path)}
    out = tmp_path / "out"
    args = ["render", "-d", "chat", "--state-url", url, "--output", str(out)]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["serving-endpoint-bgserve-chat.json"]
    refused = CliRunner().invoke(app, [*args[:5], "--shadow", "10"], env=env)
    assert refused.exit_code == 1 and "Kubernetes mirrors only" in refused.output
