"""``bgserve render`` on Vertex AI: the REST requests that build a stored deployment's
endpoint, each body parsed back by the published request types (which refuse an unknown
field) and accepted by the stand-in's rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from bgserve.cli.app import app
from tests.support.stored import stored_deployment
from tests.support.vertex_rules import missing_fields

ENV = {
    "BGSERVE_BACKEND": "vertex",
    "BGSERVE_VERTEX_PROJECT": "ml-project",
    "BGSERVE_VERTEX_LOCATION": "europe-west4",
    "BGSERVE_VERTEX_IMAGE": "europe-west4-docker.pkg.dev/ml-project/bgserve/bgserve:0.1.0",
}


def test_render_prints_the_requests_that_build_the_endpoint(tmp_path: Path) -> None:
    from google.cloud.aiplatform_v1 import DeployModelRequest, Endpoint, UploadModelRequest
    from google.protobuf import json_format

    url = stored_deployment(tmp_path, ("chat-model", 3))
    env = {**ENV, "BGSERVE_HOME": str(tmp_path)}
    result = CliRunner().invoke(app, ["render", "-d", "chat", "--state-url", url], env=env)
    assert result.exit_code == 0, result.output
    heads = [line.split()[1:3] for line in result.output.splitlines() if line.startswith("# ")]
    location = "/v1/projects/ml-project/locations/europe-west4"
    endpoint = f"{location}/endpoints/bgserve-chat"
    assert heads == [
        ["POST", f"{location}/endpoints?endpointId=bgserve-chat"],
        ["POST", f"{location}/models:upload"],
        ["POST", f"{endpoint}:deployModel"],
        ["PATCH", f"{endpoint}?updateMask=trafficSplit"],
    ]
    created, upload, deploy, routed = yaml.safe_load_all(result.output)
    # The path carries what the body leaves out (REST's ``parent`` and ``endpoint``).
    from_path: list[tuple[dict[str, Any], Any, dict[str, str]]] = [
        (created, Endpoint, {}),
        (upload, UploadModelRequest, {"parent": location[4:]}),
        (deploy, DeployModelRequest, {"endpoint": endpoint[4:]}),
        (routed, Endpoint, {}),
    ]
    for body, kind, path in from_path:
        message = kind.wrap(json_format.ParseDict({**body, **path}, kind.pb()()))
        assert missing_fields(message) == []  # and ParseDict refused any unknown field
    assert created["dedicatedEndpointEnabled"] is True and "trafficSplit" not in created
    container = upload["model"]["containerSpec"]
    assert container["imageUri"] == ENV["BGSERVE_VERTEX_IMAGE"]
    assert container["invokeRoutePrefix"] == "/*"
    assert {"name": "BGSERVE_SLOT_DEPLOYMENT", "value": "chat"} in container["env"]
    assert deploy["deployedModel"]["model"].endswith("/models/bgserve-chat-r1")
    assert routed["trafficSplit"] == {deploy["deployedModel"]["id"]: 100}


def test_render_writes_one_file_per_request(tmp_path: Path) -> None:
    url = stored_deployment(tmp_path, ("chat-model", 3))
    env = {**ENV, "BGSERVE_HOME": str(tmp_path)}
    out = tmp_path / "out"
    args = ["render", "-d", "chat", "--state-url", url, "--output", str(out)]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "create-endpoint-chat.yaml",
        "deploy-model-release-1.yaml",
        "update-endpoint-chat.yaml",
        "upload-model-bgserve-chat-r1.yaml",
    ]
