"""``bgserve render`` on SageMaker: the requests that build a stored deployment's endpoint,
each valid for SageMaker's published API model (botocore's own validator)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from bgserve.cli.app import app
from tests.support.stored import stored_deployment

ENV = {
    "BGSERVE_BACKEND": "sagemaker",
    "BGSERVE_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/bgserve-slots",
    "BGSERVE_SAGEMAKER_IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/bgserve:0.1.0",
    "BGSERVE_SAGEMAKER_BUNDLE_STORAGE_URI": "s3://bundles/{bundle_name}/{bundle_version}.tar.gz",
}


def validation_problems(command: str, request: dict[str, Any]) -> str:
    from botocore.session import get_session
    from botocore.validate import ParamValidator

    operation = "".join(part.title() for part in command.split("-"))
    shape = get_session().get_service_model("sagemaker").operation_model(operation).input_shape
    report = ParamValidator().validate(request, shape)
    return str(report.generate_report()) if report.has_errors() else ""


def test_render_prints_the_requests_that_build_the_endpoint(tmp_path: Path) -> None:
    url = stored_deployment(tmp_path, ("chat-model", 3))
    env = {**ENV, "BGSERVE_HOME": str(tmp_path)}
    result = CliRunner().invoke(app, ["render", "-d", "chat", "--state-url", url], env=env)
    assert result.exit_code == 0, result.output
    heads = [line for line in result.output.splitlines() if line.startswith("# aws sagemaker")]
    commands = [h.split()[3] for h in heads]
    assert commands == ["create-model", "create-endpoint-config", "create-endpoint"]
    requests = list(yaml.safe_load_all(result.output))
    for command, request in zip(commands, requests, strict=True):
        assert validation_problems(command, request) == "", command
    model, config, endpoint = requests
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://bundles/bgserve.chat/1.tar.gz"
    (variant,) = config["ProductionVariants"]
    assert (variant["ModelName"], variant["InitialVariantWeight"]) == (model["ModelName"], 100.0)
    assert endpoint["EndpointConfigName"] == config["EndpointConfigName"]
    assert endpoint["EndpointName"] == "bgserve-chat"


def test_render_writes_one_file_per_request_and_refuses_a_mirror(tmp_path: Path) -> None:
    url = stored_deployment(tmp_path, ("chat-model", 3))
    env = {**ENV, "BGSERVE_HOME": str(tmp_path)}
    out = tmp_path / "out"
    args = ["render", "-d", "chat", "--state-url", url, "--output", str(out)]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "create-endpoint-bgserve-chat.yaml",
        "create-endpoint-config-bgserve-chat-c1.yaml",
        "create-model-bgserve-chat-r1.yaml",
    ]
    refused = CliRunner().invoke(app, [*args[:5], "--shadow", "10"], env=env)
    assert refused.exit_code == 1 and "Kubernetes mirrors only" in refused.output
