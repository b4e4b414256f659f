"""``bgserve render`` on Azure ML: the CLI v2 documents that build a stored deployment's
endpoint, each loaded back by the SDK's own YAML loaders (its schemas refuse an unknown
field)."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from bgserve.cli.app import app
from tests.support.stored import stored_deployment

ENV = {
    "BGSERVE_BACKEND": "azureml",
    "BGSERVE_AZUREML_IMAGE": "bgserveacr.azurecr.io/bgserve:0.1.0",
}


def test_render_prints_the_documents_that_build_the_endpoint(tmp_path: Path) -> None:
    from azure.ai.ml import load_online_deployment, load_online_endpoint

    url = stored_deployment(tmp_path, ("chat-model", 3))
    env = {**ENV, "BGSERVE_HOME": str(tmp_path)}
    result = CliRunner().invoke(app, ["render", "-d", "chat", "--state-url", url], env=env)
    assert result.exit_code == 0, result.output
    heads = [line for line in result.output.splitlines() if line.startswith("# az ml")]
    commands = [" ".join(h.split()[3:5]) for h in heads]
    assert commands == [
        "online-endpoint create",
        "online-deployment create",
        "online-endpoint update",
    ]
    created, deployment, routed = yaml.safe_load_all(result.output)
    for document in (created, deployment, routed):
        source = tmp_path / f"{document['name']}.yaml"
        source.write_text(yaml.safe_dump(document), encoding="utf-8")
        loader = load_online_deployment if document is deployment else load_online_endpoint
        loaded = loader(source=source)  # the SDK's schema refuses unknown fields
        assert loaded.name == document["name"]
    assert created["$schema"].endswith("managedOnlineEndpoint.schema.json")
    assert (created["name"], created["traffic"]) == ("bgserve-chat", {})
    assert routed["traffic"] == {deployment["name"]: 100}
    assert deployment["endpoint_name"] == "bgserve-chat"
    assert deployment["environment"]["image"] == ENV["BGSERVE_AZUREML_IMAGE"]
    assert deployment["environment_variables"]["BGSERVE_SLOT_DEPLOYMENT"] == "chat"


def test_render_writes_one_file_per_document_and_refuses_a_mirror(tmp_path: Path) -> None:
    url = stored_deployment(tmp_path, ("chat-model", 3))
    env = {**ENV, "BGSERVE_HOME": str(tmp_path)}
    out = tmp_path / "out"
    args = ["render", "-d", "chat", "--state-url", url, "--output", str(out)]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "online-deployment-create-release-1.yaml",
        "online-endpoint-create-bgserve-chat.yaml",
        "online-endpoint-update-bgserve-chat.yaml",
    ]
    refused = CliRunner().invoke(app, [*args[:5], "--shadow", "10"], env=env)
    assert refused.exit_code == 1 and "Kubernetes mirrors only" in refused.output
