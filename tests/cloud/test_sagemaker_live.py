"""Live analysis on SageMaker: clients call the endpoint through the real SDK
(``invoke_endpoint``), SageMaker's own counts in CloudWatch are the traffic source, and a
green that fails on long texts is reverted by the error-rate check on those counts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from bgserve.compose.backends import sagemaker_backend
from bgserve.settings import Settings
from tests.cloud.conftest import SageMaker
from tests.support.flow import infer_body
from tests.support.kube import make_components
from tests.support.live_clients import (
    LiveClients,
    error_rate_plan,
    error_rate_revert,
    stage_flaky_green,
    wait_for_plan_end,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def clients_of(sagemaker: SageMaker, endpoint: str) -> LiveClients:
    """Live clients calling the endpoint through boto3's sagemaker-runtime client."""
    from botocore.exceptions import ClientError

    runtime = sagemaker.api.session().client(
        "sagemaker-runtime", endpoint_url=sagemaker.runtime.url
    )

    def call(text: str) -> str:
        body = json.dumps(infer_body(text))
        answer = runtime.invoke_endpoint(
            EndpointName=endpoint, Body=body, ContentType="application/json"
        )
        return str(answer["InvokedProductionVariant"])

    def failure(exc: Exception) -> str | None:
        return str(exc.response["Error"]["Code"]) if isinstance(exc, ClientError) else None

    return LiveClients(call, failure)


def test_a_flaky_green_is_reverted_on_the_errors_sagemaker_counts(
    tmp_path: Path, mlflow_store: str, sagemaker: SageMaker
) -> None:
    flat = sagemaker.api.settings(
        sagemaker_runtime_url=sagemaker.runtime.url,
        sagemaker_cloudwatch_url=sagemaker.api.url,
        sagemaker_cloudwatch_read_seconds=0,  # the stand-in's counts are live
        slot_ready_timeout_seconds=120,
    )
    backend = sagemaker_backend(Settings(**flat), sagemaker.api.session())
    extra = {"engine_interval_seconds": 0.1, "leader_election": "off", **flat}
    parts = make_components(tmp_path, mlflow_store, backend, **extra)
    parts.start()
    try:
        service = parts.service
        blue, green = stage_flaky_green(service, mlflow_store, "sm")
        with clients_of(sagemaker, "bgserve-live") as clients:
            time.sleep(0.5)
            service.start_plan("live", "test", error_rate_plan(), force=True)
            wait_for_plan_end(service, "live")
        error_rate_revert(service, "live")
        assert sagemaker.api.weights("bgserve-live") == {f"r{blue.id}": 100.0, f"r{green.id}": 0.0}
        # What failed for the clients was green's: SageMaker's ModelError on long texts.
        assert set(clients.failed) == {"ModelError"}
        assert clients.answered[f"r{blue.id}"] > 0 and clients.answered[f"r{green.id}"] > 0
    finally:
        parts.close()
